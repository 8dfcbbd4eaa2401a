// runcast-client in Node: the global WebSocket where there is one (Node 22+), else `ws`.
import { RuncastClient as Client, RuncastError } from './client.js';

const Socket = globalThis.WebSocket ?? (await import('ws')).default;

export class RuncastClient extends Client {
  constructor(urls, options = {}) {
    super(urls, { WebSocket: Socket, ...options });
  }
}

export { RuncastError };
export { fold, foldAll, newRun } from './fold.js';
