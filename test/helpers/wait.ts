// Polling with a deadline, for tests that wait on another process (a server coming up, a temp file
// growing): no fixed sleeps, and a timeout that says what it was waiting for.
import { setTimeout as sleep } from 'node:timers/promises';

export interface WaitOptions {
  /** What is awaited, for the timeout message. */
  readonly what: string;
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
  /** Stops the wait at once, rejecting with the signal's reason. */
  readonly signal?: AbortSignal;
}

/**
 * Calls `check` until it returns something other than undefined/false, and returns that. Errors thrown by
 * `check` count as "not yet"; the last one is kept as the timeout error's cause.
 */
export async function waitFor<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  options: WaitOptions,
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  let lastError: unknown;
  const { signal } = options;
  for (;;) {
    signal?.throwIfAborted();
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const last = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out waiting for ${options.what}${last}`, { cause: lastError });
    }
    await sleep(options.intervalMs ?? 25, undefined, signal === undefined ? {} : { signal }).catch(() => {
      signal?.throwIfAborted();
    });
  }
}
