// runcast-client in a browser (or any runtime with a global WebSocket).
export { RuncastClient, RuncastError } from './client.js';
export { fold, foldAll, newRun } from './fold.js';
