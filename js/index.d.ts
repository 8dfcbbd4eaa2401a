// Types of runcast-client (the runcast wire contract, docs/protocol.md).

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type RunStatus = 'pending' | 'running' | 'waiting' | 'sleeping' | 'completed' | 'failed' | 'cancelled' | (string & {});

export interface Step {
  name: string;
  status: string;
  output: Json;
  error: string | null;
  attempts: number;
  started_at: string | null;
  finished_at: string | null;
  /** While the step sleeps (8.1): until when. */
  wake_at?: string;
}

export interface InputRequest {
  request_id: string;
  prompt: string;
  schema: Json;
  step: string | null;
  /** Seconds, for an ask with a timeout. */
  timeout?: number;
  /** Unix time (seconds) when an ask with a timeout expires. */
  expires_at?: number;
  /** What is taken when the timeout passes. */
  default?: Json;
  kind?: 'confirmation';
  [field: string]: Json | undefined;
}

/** A run's snapshot, as `poll` answers it (lists leave out `steps`). */
export interface Run {
  run_id: string;
  workflow: string;
  status: RunStatus;
  input: Json;
  output: Json;
  error: Json;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  last_seq: number;
  steps?: Step[];
  waiting_for: InputRequest[];
  owner: string | null;
  /** When a delayed run may start (8.2); null: at once. */
  scheduled_for: string | null;
  /** Among due pending runs, higher starts first (-100..100, default 0). */
  priority: number;
  /** At most `concurrency_limit` runs with this key run at once; null: no key. */
  concurrency_key: string | null;
  concurrency_limit: number | null;
  /** While the run sleeps (8.1): the earliest time one of its steps sleeps until; else null. */
  wake_at: string | null;
  /** The fields replaced by a `{truncated, bytes, full}` marker (too big for one frame). */
  truncated?: string[];
  /** In list entries and runs-feed frames: the step running now (the deepest), or null. */
  current_step?: string | null;
  /** In list entries and runs-feed frames: leaf steps completed or skipped, and all of them. */
  steps_done?: number;
  steps_total?: number;
  [field: string]: unknown;
}

/** One event of a run: `seq` 1, 2, 3, ... with no gaps. */
export interface RunEvent {
  type: 'event';
  run_id: string;
  seq: number;
  event: string;
  step: string | null;
  ts: string;
  data: { [field: string]: Json };
}

export interface Workflow {
  name: string;
  description?: string | null;
  steps: string[];
  input_schema?: Json;
}

/** A workflow started on a clock (8.3). */
export interface Schedule {
  name: string;
  workflow: string;
  input: Json;
  /** A cron expression in `timezone`; null for an `every` schedule. */
  cron: string | null;
  /** Whole seconds; null for a cron schedule. */
  every: number | null;
  timezone: string;
  catchup: 'latest' | 'skip' | 'all';
  /** The next tick (a wire time). */
  next_at: string;
  /** The run of the last tick started (`sched:<name>:<tick>`), or null. */
  last_run_id: string | null;
  source: 'code' | 'api';
  /** The sub of who made it over the wire; its runs are theirs. */
  owner?: string | null;
}

export interface NewSchedule {
  name: string;
  workflow: string;
  input?: Json;
  cron?: string;
  every?: number;
  timezone?: string;
  catchup?: 'latest' | 'skip' | 'all';
}

export interface RunFilters {
  workflow?: string;
  status?: string;
  owner?: string;
}

export interface StartOptions {
  runId?: string;
  delay?: number;
  startAt?: string;
  priority?: number;
  concurrencyKey?: string;
}

export interface ClientOptions {
  /** A token, or a function giving one: called on every (re)connect and before a signed token expires. */
  token?: string | (() => string | Promise<string>);
  /** The WebSocket class (default: the global one; in Node without one, `ws`). */
  WebSocket?: unknown;
  /** The longest wait between reconnect attempts, in ms (default 5000). */
  maxDelayMs?: number;
  /** Told of the connection: `connecting`, `connected`, `reconnecting` (`detail.delayMs`: the
   * wait before the next attempt), `token` (waiting for setToken(); `detail.message`),
   * `disconnected` (dropped while nothing was followed; the next call reconnects). */
  onState?: (state: ConnectionState, detail: { delayMs?: number; message?: string }) => void;
  /** Given, a refused or missing token does not fail anything: this is called (with what to
   * tell the user) and the client waits for setToken(), then carries on where it was. */
  onAuthNeeded?: (message: string) => void;
  /** Each `run_changed` frame of a runs feed this connection subscribed to with request(). */
  onRunChanged?: (run: Run) => void;
}

export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'token' | 'disconnected';

export interface EventsOptions {
  /** Yield events with seq > after (default 0: all of them). */
  after?: number;
  /** Ends the iteration at once, wherever it waits. */
  signal?: AbortSignal;
  /** Called with the run's snapshot each time the subscription is made (and remade after a reconnect). */
  onSnapshot?: (run: Run) => void;
}

/** An error of the contract: `code` is its error code (`run_not_found`, `unauthorized`, ...). */
export class RuncastError extends Error {
  code: string;
  retryAfter?: number;
  constructor(code: string, message: string, retryAfter?: number);
}

export class RuncastClient {
  constructor(urls: string | string[], options?: ClientOptions);
  /** Start a run; the snapshot (subscribes to nothing: see events()). */
  start(workflow: string, input?: Json, options?: StartOptions): Promise<Run>;
  /** Each event with seq > after, exactly once, in order, up to and including the terminal event. */
  events(runId: string, options?: EventsOptions): AsyncGenerator<RunEvent, void, undefined>;
  poll(runId: string): Promise<Run>;
  cancel(runId: string): Promise<Run>;
  respond(runId: string, requestId: string, value: Json): Promise<Run>;
  listWorkflows(): Promise<Workflow[]>;
  listSchedules(): Promise<Schedule[]>;
  createSchedule(schedule: NewSchedule): Promise<Schedule>;
  deleteSchedule(name: string): Promise<Schedule>;
  listRuns(filters?: RunFilters & { limit?: number; before?: string }): Promise<{ runs: Run[]; next: string | null }>;
  /** The matching runs that exist, then every change (a run only when its last_seq grew). */
  watchRuns(filters?: RunFilters, options?: { signal?: AbortSignal }): AsyncGenerator<Run, void, undefined>;
  /** Any message of the contract (its `id` is added); the reply, or a RuncastError.
   * `rate_limited` is waited out; a request lost with its connection is sent again (but `start`). */
  request<T = { type: string; [field: string]: unknown }>(message: { type: string; [field: string]: unknown }): Promise<T>;
  /** Connect now and stay connected (reconnecting as needed) until close(). */
  connect(): Promise<unknown>;
  /** Use this token from now on: the open connection is authenticated with it, or the client reconnects now. */
  setToken(token: string | (() => string | Promise<string>)): void;
  /** Welcomed, and authenticated when there is a token. */
  readonly connected: boolean;
  /** Close the connection; events() and watchRuns() end with a RuncastError `closed`. */
  close(): void;
}

/** A run as it is created, before any event (the server's rules: docs/protocol.md). */
export function newRun(
  runId: string,
  workflow: string,
  input: Json,
  steps: string[],
  createdAt: string | null,
  owner?: string | null,
  /** Its scheduled_for, priority, concurrency_key and concurrency_limit (default: none). */
  order?: Partial<Pick<Run, 'scheduled_for' | 'priority' | 'concurrency_key' | 'concurrency_limit'>>,
): Run;
/** Apply one event to a run's snapshot, in place; returns it. */
export function fold(run: Run, event: RunEvent): Run;
export function foldAll(run: Run, events: RunEvent[]): Run;
