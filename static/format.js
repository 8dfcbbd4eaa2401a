// Formatting of times, durations and values for display.

export const TERMINAL_EVENTS = new Set(['run_completed', 'run_failed', 'run_cancelled']);
export const FINISHED = new Set(['completed', 'failed', 'cancelled']);

/** "1.2 s", "3 min 05 s", "2 h 03 min"; an empty string when unknown. */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(Math.floor(seconds % 60)).padStart(2, '0')} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, '0')} min`;
}

/** Milliseconds between two ISO times; `end` defaults to now (a thing still going on). */
export function elapsed(start, end) {
  if (!start) return null;
  const from = Date.parse(start);
  const to = end ? Date.parse(end) : Date.now();
  return Number.isNaN(from) || Number.isNaN(to) ? null : to - from;
}

/** A local time for a wire time: the time of day for today, else date and time. */
export function formatTime(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

/** A run's output or input for reading: a string as it is, anything else as indented JSON. */
export function formatValue(value) {
  if (typeof value === 'string') return value;
  return JSON.stringify(value, null, 2) ?? 'null';
}
