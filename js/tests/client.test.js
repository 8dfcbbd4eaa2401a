// runcast-client against real runcast servers (node --test).
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { join } from 'node:path';
import { after, test } from 'node:test';

import { RuncastClient, RuncastError } from '../node.js';
import { ROOT, Server } from './server.js';

const ASK_FLOWS = join(ROOT, 'tests', 'ask_flows.py');
const servers = [];
const clients = [];
after(async () => {
  for (const client of clients) client.close();
  for (const server of servers) await server.kill();
});

async function serve(...flags) {
  const server = await new Server(...flags).start();
  servers.push(server);
  return server;
}

function connect(urls, options) {
  const client = new RuncastClient(urls, options);
  clients.push(client);
  return client;
}

function seqsOf(events) {
  return events.map((e) => e.seq);
}

test('start, then every event exactly once and in order, ending with the terminal one', async () => {
  const server = await serve();
  const client = connect(server.url);
  const run = await client.start('count', { n: 5, delay: 0.01 });
  assert.equal(run.workflow, 'count');
  const events = [];
  for await (const event of client.events(run.run_id)) events.push(event);
  assert.deepEqual(seqsOf(events), events.map((_, i) => i + 1));
  assert.equal(events.at(-1).event, 'run_completed');
  assert.deepEqual(events.at(-1).data.output, { count: 5 });
  const later = [];
  for await (const event of client.events(run.run_id, { after: 3 })) later.push(event.seq);
  assert.deepEqual(later, seqsOf(events).slice(3));
  assert.equal((await client.poll(run.run_id)).status, 'completed');
});

test('the dashboard\'s address (http://host:port, even with a run\'s fragment) reaches /ws', async () => {
  const server = await serve();
  const client = connect(`${server.http}/#/runs/x`);
  assert.deepEqual(client.urls, [server.url]);
  assert.equal((await client.start('echo', 7)).workflow, 'echo');
  assert.deepEqual(connect(['127.0.0.1:1', 'https://h.example/']).urls, ['ws://127.0.0.1:1/ws', 'wss://h.example/ws']);
});

test('events() resumes where it was across a kill -9 and a restart of the server', async () => {
  const server = await serve();
  const client = connect(server.url, { maxDelayMs: 200 });
  const run = await client.start('count', { n: 30, delay: 0.05 });
  const events = [];
  for await (const event of client.events(run.run_id)) {
    events.push(event);
    if (events.length === 8) {
      await server.kill();
      await server.start();
    }
  }
  assert.deepEqual(seqsOf(events), events.map((_, i) => i + 1)); // no gap, no repeat
  assert.ok(events.some((e) => e.event === 'run_resumed'));
  assert.equal(events.at(-1).event, 'run_completed');
});

test('errors carry the contract code; rate limits are waited out', async () => {
  const server = await serve('--starts-per-second', '2');
  const client = connect(server.url);
  await assert.rejects(client.poll('no-such-run'), (error) => {
    assert.ok(error instanceof RuncastError);
    assert.equal(error.code, 'run_not_found');
    return true;
  });
  const began = Date.now();
  const runs = [];
  for (let i = 0; i < 4; i++) runs.push(await client.start('echo', i));
  assert.equal(new Set(runs.map((r) => r.run_id)).size, 4);
  assert.ok(Date.now() - began >= 500, 'the third start waited for retry_after');
  assert.ok((await client.listWorkflows()).some((w) => w.name === 'echo'));
  const { runs: listed } = await client.listRuns({ workflow: 'echo' });
  assert.equal(listed.length, 4);
});

test('a waiting run is answered, and watchRuns sees it change', async () => {
  const server = await serve('--workflows', ASK_FLOWS);
  const client = connect(server.url);
  const watcher = connect(server.url);
  const run = await client.start('approval', { topic: 'x' });
  const seen = [];
  const watching = (async () => {
    for await (const changed of watcher.watchRuns({ workflow: 'approval' })) {
      seen.push(changed.status);
      if (changed.status === 'completed') return;
    }
  })();
  for await (const event of client.events(run.run_id)) {
    if (event.event === 'input_requested') await client.respond(run.run_id, event.data.request_id, { ok: true });
    if (event.event === 'run_completed') assert.deepEqual(event.data.output.ok, true);
  }
  await watching;
  assert.equal(seen.at(-1), 'completed', seen.join()); // (a reader may be sent only a run's newest state)
});

test('a token function is called on every connect, and a refused token is a RuncastError', async () => {
  const secret = 'j'.repeat(40);
  const server = await serve('--auth-secret', secret);
  let calls = 0;
  const token = () => {
    calls += 1;
    return jwt({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 600 }, secret);
  };
  const client = connect(server.url, { token, maxDelayMs: 200 });
  const run = await client.start('count', { n: 20, delay: 0.05 });
  assert.equal(run.owner, 'alice');
  const events = [];
  for await (const event of client.events(run.run_id)) {
    events.push(event);
    if (events.length === 4) {
      await server.kill();
      await server.start();
    }
  }
  assert.equal(events.at(-1).event, 'run_completed');
  assert.ok(calls >= 2, `the token function was called ${calls} times`);
  const wrong = connect(server.url, { token: 'not-a-token' });
  await assert.rejects(wrong.listWorkflows(), (error) => error.code === 'unauthorized');
});

function jwt(claims, secret) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

test("given a cluster's two nodes, events() goes on through the other when one is killed", async (t) => {
  const pg = process.env.RUNCAST_TEST_PG; // set by tests/test_js.py, which starts a throwaway PostgreSQL
  if (!pg) {
    t.skip('no PostgreSQL: run through tests/test_js.py');
    return;
  }
  const a = await serve('--db', pg, '--node-id', 'a', '--takeover-seconds', '1');
  const b = await serve('--db', pg, '--node-id', 'b', '--takeover-seconds', '1');
  const client = connect([a.url, b.url], { maxDelayMs: 200 });
  const run = await client.start('count', { n: 40, delay: 0.05 });
  const events = [];
  for await (const event of client.events(run.run_id)) {
    events.push(event);
    if (events.length === 6) await a.kill();
  }
  assert.deepEqual(seqsOf(events), events.map((_, i) => i + 1));
  assert.equal(events.at(-1).event, 'run_completed');
});

test('a token function refreshes the token before it expires, and the socket stays open', async () => {
  const secret = 'k'.repeat(40);
  const server = await serve('--auth-secret', secret);
  const issued = [];
  const token = () => {
    const exp = Math.floor(Date.now() / 1000) + 32; // refreshed 30 s before: after about 2 s
    issued.push(exp);
    return jwt({ sub: 'alice', exp }, secret);
  };
  const client = connect(server.url, { token });
  const run = await client.start('count', { n: 50, delay: 0.1 }); // 5 s: past the first token's refresh
  const events = [];
  for await (const event of client.events(run.run_id)) events.push(event);
  assert.deepEqual(seqsOf(events), events.map((_, i) => i + 1));
  assert.ok(issued.length >= 2, `the token was asked for ${issued.length} time(s)`);
});

test('two events() of one run share a subscription and each gets every event once; a signal ends one', async () => {
  const server = await serve();
  const client = connect(server.url);
  const run = await client.start('count', { n: 10, delay: 0.02 });
  const controller = new AbortController();
  const first = [];
  const second = [];
  const reading = (async () => {
    for await (const event of client.events(run.run_id, { signal: controller.signal })) {
      first.push(event.seq);
      if (first.length === 3) controller.abort();
    }
  })();
  for await (const event of client.events(run.run_id, { after: 0 })) second.push(event.seq);
  await reading;
  assert.deepEqual(first, [1, 2, 3]);
  assert.deepEqual(second, second.map((_, i) => i + 1));
  const none = [];
  for await (const event of client.events(run.run_id, { after: second.length })) none.push(event);
  assert.deepEqual(none, []); // a finished run with nothing after `after`: the loop just ends
});

test('a page-style client: connection states, a token asked for and given, events() carried on meanwhile', async () => {
  const secret = 'm'.repeat(40);
  const server = await serve('--auth-secret', secret);
  const states = [];
  const asked = [];
  let given = null;
  const client = connect(server.url, {
    maxDelayMs: 200,
    onState: (state) => states.push(state),
    onAuthNeeded: (message) => {
      asked.push(message);
      given?.();
    },
  });
  await client.connect();
  assert.deepEqual(states, ['connecting', 'connected']);
  assert.equal(client.connected, true);

  // No token: the server refuses the subscription; the client asks for a token and waits.
  const owner = connect(server.url, { token: jwt({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 600 }, secret) });
  const run = await owner.start('count', { n: 10, delay: 0.05 });
  const snapshots = [];
  const events = [];
  const reading = (async () => {
    for await (const event of client.events(run.run_id, { onSnapshot: (r) => snapshots.push(r.status) })) {
      events.push(event);
    }
  })();
  await new Promise((resolve) => {
    given = resolve;
    if (asked.length > 0) resolve();
  });
  assert.deepEqual(asked, ['This server needs a token.']);
  assert.equal(states.at(-1), 'token');

  // A wrong token is refused and asked for again; the right one carries everything on.
  given = null;
  const again = new Promise((resolve) => {
    given = resolve;
  });
  client.setToken('wrong');
  await again;
  assert.equal(asked.at(-1), 'That token was not accepted.');
  client.setToken(jwt({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 600 }, secret));
  await reading;
  assert.deepEqual(seqsOf(events), events.map((_, i) => i + 1));
  assert.equal(events.at(-1).event, 'run_completed');
  assert.ok(snapshots.length >= 1);
  assert.equal(states.at(-1), 'connected');

  // Persistent: a restart is followed by reconnecting, then connected, with nothing followed.
  await server.kill();
  await server.start();
  const deadline = Date.now() + 10_000;
  while (states.at(-1) !== 'connected' || !states.includes('reconnecting')) {
    assert.ok(Date.now() < deadline, states.join());
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.equal((await client.poll(run.run_id)).status, 'completed');
});
