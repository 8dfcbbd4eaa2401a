import type { Run, RunEvent, RunFilters, RuncastClient, InputRequest } from './index.js';

export function useRun(
  client: RuncastClient | null,
  runId: string | null,
): { run: Run | null; events: RunEvent[]; status: string | null; waitingFor: InputRequest[]; error: Error | null };

export function useRuns(client: RuncastClient | null, filters?: RunFilters): { runs: Run[]; error: Error | null };
