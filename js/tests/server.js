// A real runcast server for the tests: `python -m server` on a free port with a fresh SQLite file.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PYTHON = process.env.RUNCAST_PYTHON ?? join(ROOT, '.venv', 'bin', 'python');

export function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export class Server {
  constructor(...flags) {
    this.flags = flags;
    this.db = join(mkdtempSync(join(tmpdir(), 'runcast-js-')), 'runcast.db');
    this.proc = null;
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    this.port ??= await freePort();
    const args = ['-m', 'server', '--port', String(this.port), '--db', this.db, '--log-level', 'warning', ...this.flags];
    this.proc = spawn(PYTHON, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      try {
        if ((await fetch(`${this.http}/healthz`)).ok) return this;
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error('the server did not start');
  }

  kill() {
    const proc = this.proc;
    this.proc = null;
    if (!proc || proc.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      proc.once('exit', resolve);
      proc.kill('SIGKILL');
    });
  }
}
