// The run's timeline as a waterfall: one row per step, one bar per attempt, on one time axis.
//
// Plain elements positioned in percent of the axis (no library, no canvas): each bar is an
// element with an accessible label, a running bar grows to "now", and the time a step spent
// waiting for an answer is drawn inside its bar. The model (attempts) is kept by run.js from
// the events' `ts`; this module only draws it.

import { el } from './dom.js';
import { formatDuration } from './format.js';

const TICKS = 4; // at most this many intervals on the axis
const S = 1000;
const MIN = 60 * S;
const H = 60 * MIN;
// Round tick steps, in ms: the axis reads 0, 2.0 s, 4.0 s (not 0 ms 0 ms 1 ms 1 ms 1 ms).
const STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, S, 2 * S, 5 * S, 10 * S, 15 * S, 30 * S,
  MIN, 2 * MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN, H, 2 * H, 3 * H, 6 * H, 12 * H, 24 * H];

const TICK_ROOM = 80; // px an axis label needs: a phone's narrow axis gets fewer of them

/** The times (ms from the start) the axis of a `span` ms long timeline is marked at, in at most `intervals`. */
export function ticks(span, intervals = TICKS) {
  const step = STEPS.find((s) => s * intervals >= span) ?? Math.ceil(span / intervals / (24 * H)) * 24 * H;
  return Array.from({ length: Math.floor(span / step) + 1 }, (_, i) => i * step);
}

/**
 * One attempt of a step, as run.js records it.
 * @typedef {{step: string, attempt: number, start: number, end: number|null, status: string,
 *            waits: {start: number, end: number|null, kind?: 'sleep', until?: string}[],
 *            node?: HTMLElement}} Attempt
 */

/** A bar's description, for its tooltip and for screen readers. */
export function describe(bar, origin, now) {
  const end = bar.end ?? now;
  const spent = (kind) =>
    bar.waits.filter((w) => (w.kind ?? 'ask') === kind).reduce((sum, w) => sum + Math.max(0, (w.end ?? now) - w.start), 0);
  const waited = spent('ask');
  const slept = spent('sleep');
  const parts = [
    `${bar.step}, attempt ${bar.attempt}: ${bar.status}`,
    formatDuration(end - bar.start) || '0 ms',
    `from ${formatDuration(bar.start - origin) || '0 ms'}`,
  ];
  if (waited > 0) parts.push(`waited ${formatDuration(waited)} for input`);
  if (slept > 0) parts.push(`slept ${formatDuration(slept)}`);
  return parts.join(', ');
}

export class Waterfall {
  constructor(root) {
    this.root = root;
    this.axis = el('div', { class: 'wf-axis', 'aria-hidden': 'true' });
    this.rows = el('ol', { class: 'wf-rows' });
    this.rowByStep = new Map(); // step path -> {li, track}
    root.replaceChildren(this.axis, this.rows);
  }

  clear() {
    this.rowByStep.clear();
    this.axis.replaceChildren();
    this.rows.replaceChildren();
  }

  /** Draw `bars` (in the order they started) between `origin` and `end` (ms since the epoch). */
  render(bars, origin, end, now) {
    const span = Math.max(end - origin, 1);
    const at = (t) => `${Math.min(100, Math.max(0, ((t - origin) / span) * 100)).toFixed(3)}%`;
    const width = (from, to) => `${Math.min(100, Math.max(0, ((to - from) / span) * 100)).toFixed(3)}%`;

    this.axis.replaceChildren(
      ...ticks(span, this.room()).map((t) => el('span', { class: 'wf-tick', style: `left: ${at(origin + t)}` }, formatDuration(t) || '0 ms')),
    );
    const totals = new Map(); // step path -> ms spent in all its attempts
    for (const bar of bars) {
      const row = this.row(bar.step);
      totals.set(bar.step, (totals.get(bar.step) ?? 0) + Math.max(0, (bar.end ?? now) - bar.start));
      if (!bar.node) {
        bar.node = el('span', { class: 'wf-bar', role: 'img', dataset: { attempt: String(bar.attempt) } });
        bar.waitNodes = [];
        row.track.append(bar.node);
      }
      const barEnd = bar.end ?? now;
      const text = describe(bar, origin, now);
      bar.node.dataset.status = bar.status;
      bar.node.style.left = at(bar.start);
      bar.node.style.width = width(bar.start, barEnd);
      bar.node.setAttribute('aria-label', text);
      bar.node.title = text;
      bar.waits.forEach((wait, i) => {
        const sleep = wait.kind === 'sleep';
        if (!bar.waitNodes[i]) {
          bar.waitNodes[i] = sleep
            ? el('span', { class: 'wf-sleep', role: 'img' })
            : el('span', { class: 'wf-wait', 'aria-hidden': 'true' });
          row.track.append(bar.waitNodes[i]);
        }
        const node = bar.waitNodes[i];
        node.style.left = at(wait.start);
        node.style.width = width(wait.start, wait.end ?? now);
        const long = formatDuration((wait.end ?? now) - wait.start) || '0 ms';
        node.title = sleep
          ? `${bar.step} ${wait.end === null ? 'sleeps' : 'slept'} ${long}, until ${wait.until}`
          : `${bar.step} waited for input: ${long}`;
        if (sleep) node.setAttribute('aria-label', node.title);
      });
    }
    for (const [step, total] of totals) this.rowByStep.get(step).total.textContent = formatDuration(total) || '0 ms';
  }

  /** How many intervals the axis has room to label (all of them while it is not laid out). */
  room() {
    const width = this.axis.clientWidth || TICKS * TICK_ROOM;
    return Math.max(1, Math.min(TICKS, Math.floor(width / TICK_ROOM)));
  }

  row(step) {
    let row = this.rowByStep.get(step);
    if (!row) {
      const depth = step.split('/').length - 1;
      const track = el('div', { class: 'wf-track' });
      const total = el('span', { class: 'wf-total' });
      const li = el(
        'li',
        { class: 'wf-row', dataset: { step } },
        // A nested step shows its own name, indented under its parent's (the title has the path).
        el(
          'span',
          { class: 'wf-label', title: step, style: `padding-left: ${depth * 0.9}rem` },
          step.slice(step.lastIndexOf('/') + 1),
        ),
        track,
        total,
      );
      row = { li, track, total };
      this.rowByStep.set(step, row);
      this.rows.append(li);
    }
    return row;
  }
}
