// `niche watch-store`: polls the Nix database for paths registered since the last look and pushes their
// closures in batches, until stopped. The queue is bounded by construction: at most `batchSize` new paths
// are held in memory; anything newer waits in the Nix database itself (the last pushed row id is the
// cursor), so a slow server delays pushes but never grows memory or loses paths. A batch that fails as a
// whole for a retryable reason (server down) is retried with backoff; one that fails for a path-specific
// reason is retried path by path so one bad path does not hold back the rest.
import { lstat } from 'node:fs/promises';
import { setTimeout as sleepTimer } from 'node:timers/promises';
import { endsPush, isRetryable } from './errors.js';
import type { NixDbReader } from './nix-db.js';
import { errorText, formatSummary, type PushReporter } from './progress.js';
import type { PushSummary } from './push.js';

export const DEFAULT_WATCH_INTERVAL_MS = 1000;
export const DEFAULT_WATCH_BATCH = 1000;

export interface WatchOptions {
  readonly db: NixDbReader;
  readonly intervalMs: number;
  readonly includeDrv: boolean;
  /** At most this many new paths are taken from the database per push. */
  readonly batchSize: number;
  /** Stops the watch; running uploads finish first. */
  readonly stopSignal: AbortSignal;
  /** Pushes the closures of the given paths. */
  readonly push: (paths: readonly string[]) => Promise<PushSummary>;
  readonly reporter: PushReporter;
  /** Start after this database row id instead of the newest one (tests). */
  readonly startAfterId?: number;
}

export interface WatchTotals {
  readonly batches: number;
  readonly pushed: number;
  readonly failed: number;
}

const exists = (path: string): Promise<boolean> =>
  lstat(path).then(
    () => true,
    () => false,
  );

export async function watchStore(options: WatchOptions): Promise<WatchTotals> {
  const { db, stopSignal: stop, reporter } = options;
  const stopped = (): boolean => stop.aborted;
  const pause = (ms: number): Promise<void> =>
    sleepTimer(ms, undefined, { signal: stop }).catch(() => undefined);
  let cursor = options.startAfterId ?? db.latestId();
  let batches = 0;
  let pushed = 0;
  let failed = 0;
  let backoffMs = options.intervalMs;

  const record = (summary: PushSummary): void => {
    batches++;
    pushed += summary.pushed;
    failed += summary.failed.length;
    if (summary.pushed > 0 || summary.failed.length > 0 || summary.cancelled > 0)
      reporter.note(formatSummary(summary));
    // A refused token or a missing permission: nothing later will get through either.
    if (summary.stoppedBy !== undefined) throw summary.stoppedBy;
  };

  while (!stopped()) {
    let rows;
    try {
      rows = db.pathsAfter(cursor, options.batchSize);
    } catch (error) {
      reporter.note(`warning: reading the Nix database failed (retrying): ${errorText(error)}`);
      await pause(Math.max(options.intervalMs, 1000));
      continue;
    }
    const last = rows.at(-1);
    if (last === undefined) {
      await pause(options.intervalMs);
      continue;
    }
    const candidates = rows
      .map((row) => row.path)
      .filter((path) => options.includeDrv || !path.endsWith('.drv'));
    // A path may already be gone again (garbage-collected); nix path-info would refuse the whole batch.
    const paths: string[] = [];
    for (const path of candidates) if (await exists(path)) paths.push(path);
    if (paths.length > 0) {
      try {
        record(await options.push(paths));
      } catch (error) {
        if (endsPush(error)) throw error;
        if (isRetryable(error)) {
          reporter.note(
            `warning: push failed, retrying in ${(backoffMs / 1000).toFixed(0)} s: ${errorText(error)}`,
          );
          await pause(backoffMs);
          backoffMs = Math.min(backoffMs * 2, 60_000);
          continue; // the same batch again: the cursor did not move
        }
        if (paths.length > 1) {
          reporter.note(
            `warning: pushing ${paths.length} new paths failed (${errorText(error)}); trying one by one`,
          );
          for (const path of paths) {
            if (stopped()) break;
            try {
              record(await options.push([path]));
            } catch (single) {
              if (endsPush(single)) throw single;
              failed++;
              reporter.failed(path, single);
            }
          }
        } else {
          failed++;
          reporter.failed(paths[0] ?? '', error);
        }
      }
    }
    backoffMs = options.intervalMs;
    cursor = last.id;
  }
  return { batches, pushed, failed };
}
