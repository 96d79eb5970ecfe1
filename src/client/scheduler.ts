// Runs tasks over a dependency graph: a node starts only after every dependency in the graph finished
// successfully (the server refuses a path whose references it does not have yet), at most `concurrency`
// at a time, each retried with exponential backoff while its error is retryable. A node whose dependency
// failed is skipped, and so are its own dependants. Stopping (the signal) starts nothing new and lets
// running tasks finish. Dependencies outside the graph count as satisfied (already in the cache).
//
// Memory is O(nodes + edges); the graph is the closure being pushed, which the caller already holds.
import { setTimeout as sleepTimer } from 'node:timers/promises';
import { retryAfterOf } from './errors.js';

export interface GraphNode<T> {
  readonly id: string;
  /** Ids of nodes that must finish first; unknown ids and the node's own id are ignored. */
  readonly dependencies: readonly string[];
  readonly value: T;
}

export type NodeOutcome =
  | { readonly status: 'done'; readonly attempts: number }
  | { readonly status: 'failed'; readonly error: unknown; readonly attempts: number }
  /** A dependency (named) failed or was skipped, so this node never started. */
  | { readonly status: 'skipped'; readonly dependency: string }
  /** Stopped before it started, or while it waited to retry. */
  | { readonly status: 'cancelled' };

export interface RetryPolicy {
  /** Attempts in total (1 = no retry). */
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  readonly isRetryable: (error: unknown) => boolean;
}

export type SchedulerEvent<T> =
  | { readonly type: 'start'; readonly node: GraphNode<T>; readonly attempt: number }
  | {
      readonly type: 'retry';
      readonly node: GraphNode<T>;
      readonly attempt: number;
      readonly error: unknown;
      readonly delayMs: number;
    }
  | { readonly type: 'done'; readonly node: GraphNode<T> }
  | { readonly type: 'failed'; readonly node: GraphNode<T>; readonly error: unknown }
  | { readonly type: 'skipped'; readonly node: GraphNode<T>; readonly dependency: string };

export interface SchedulerOptions<T> {
  readonly concurrency: number;
  readonly retry: RetryPolicy;
  /** When aborted, no further task starts; running ones finish. */
  readonly stopSignal?: AbortSignal | undefined;
  readonly onEvent?: (event: SchedulerEvent<T>) => void;
  /** Waits between attempts (injectable for tests); resolves early, or rejects, when `signal` aborts. */
  readonly sleep?: (ms: number, signal: AbortSignal | undefined) => Promise<void>;
  readonly random?: () => number;
}

export type Task<T> = (node: GraphNode<T>, attempt: number) => Promise<void>;

export class DependencyCycleError extends Error {
  constructor(ids: readonly string[]) {
    super(`dependency cycle among ${ids.slice(0, 5).join(', ')}${ids.length > 5 ? ', …' : ''}`);
    this.name = 'DependencyCycleError';
  }
}

/**
 * The wait before attempt `attempt + 1`: base·2^(attempt-1), capped, with up to 25 % jitter; at least what
 * the server asked for (`retryAfterMs`, its Retry-After), within the same cap.
 */
export function backoffDelay(
  policy: RetryPolicy,
  attempt: number,
  random: () => number,
  retryAfterMs = 0,
): number {
  const exponential = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return Math.max(Math.round(exponential * (1 + random() * 0.25)), Math.min(policy.maxDelayMs, retryAfterMs));
}

const defaultSleep = async (ms: number, signal: AbortSignal | undefined): Promise<void> => {
  await sleepTimer(ms, undefined, signal === undefined ? {} : { signal });
};

/** Runs `task` for every node in dependency order; resolves with every node's outcome (never rejects). */
export function runGraph<T>(
  nodes: readonly GraphNode<T>[],
  task: Task<T>,
  options: SchedulerOptions<T>,
): Promise<Map<string, NodeOutcome>> {
  const concurrency = Math.max(1, Math.floor(options.concurrency));
  const sleep = options.sleep ?? defaultSleep;
  const random = options.random ?? Math.random;
  const stop = options.stopSignal;
  const emit = options.onEvent ?? ((): void => undefined);
  const stopped = (): boolean => stop?.aborted === true;

  const byId = new Map<string, GraphNode<T>>();
  for (const node of nodes) byId.set(node.id, node);
  const waitingOn = new Map<string, number>();
  const dependants = new Map<string, string[]>();
  for (const node of byId.values()) {
    const deps = new Set(node.dependencies.filter((id) => id !== node.id && byId.has(id)));
    waitingOn.set(node.id, deps.size);
    for (const dep of deps) {
      const list = dependants.get(dep);
      if (list === undefined) dependants.set(dep, [node.id]);
      else list.push(node.id);
    }
  }

  const outcomes = new Map<string, NodeOutcome>();
  const ready: string[] = [...byId.keys()].filter((id) => waitingOn.get(id) === 0);
  let readyHead = 0;
  let running = 0;

  return new Promise((resolve) => {
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      stop?.removeEventListener('abort', onStop);
      const stuck = [...byId.keys()].filter((id) => !outcomes.has(id));
      for (const id of stuck) {
        outcomes.set(
          id,
          stopped()
            ? { status: 'cancelled' }
            : { status: 'failed', error: new DependencyCycleError(stuck), attempts: 0 },
        );
      }
      resolve(outcomes);
    };

    const skipDependants = (failedId: string): void => {
      const pending = [failedId];
      while (pending.length > 0) {
        const id = pending.pop() ?? '';
        for (const dependant of dependants.get(id) ?? []) {
          if (outcomes.has(dependant)) continue;
          outcomes.set(dependant, { status: 'skipped', dependency: id });
          const node = byId.get(dependant);
          if (node !== undefined) emit({ type: 'skipped', node, dependency: id });
          pending.push(dependant);
        }
      }
    };

    const settle = (node: GraphNode<T>, outcome: NodeOutcome): void => {
      outcomes.set(node.id, outcome);
      running--;
      if (outcome.status === 'done') {
        emit({ type: 'done', node });
        for (const dependant of dependants.get(node.id) ?? []) {
          const left = (waitingOn.get(dependant) ?? 1) - 1;
          waitingOn.set(dependant, left);
          if (left === 0 && !outcomes.has(dependant)) ready.push(dependant);
        }
      } else if (outcome.status === 'failed') {
        emit({ type: 'failed', node, error: outcome.error });
        skipDependants(node.id);
      }
      // A cancelled node's dependants are cancelled with everything else that did not start.
      pump();
    };

    const runNode = async (node: GraphNode<T>): Promise<NodeOutcome> => {
      for (let attempt = 1; ; attempt++) {
        emit({ type: 'start', node, attempt });
        try {
          await task(node, attempt);
          return { status: 'done', attempts: attempt };
        } catch (error) {
          if (attempt >= options.retry.attempts || !options.retry.isRetryable(error)) {
            return { status: 'failed', error, attempts: attempt };
          }
          if (stopped()) return { status: 'cancelled' };
          const delayMs = backoffDelay(options.retry, attempt, random, retryAfterOf(error));
          emit({ type: 'retry', node, attempt, error, delayMs });
          try {
            await sleep(delayMs, stop);
          } catch {
            // Stopped while waiting.
          }
          if (stopped()) return { status: 'cancelled' };
        }
      }
    };

    const pump = (): void => {
      while (!stopped() && running < concurrency && readyHead < ready.length) {
        const id = ready[readyHead++] ?? '';
        const node = byId.get(id);
        if (node === undefined || outcomes.has(id)) continue;
        running++;
        void runNode(node).then(
          (outcome) => {
            settle(node, outcome);
          },
          (error: unknown) => {
            settle(node, { status: 'failed', error, attempts: 1 });
          },
        );
      }
      // Keep the queue from holding every id ever made ready.
      if (readyHead > 1024 && readyHead * 2 > ready.length) {
        ready.splice(0, readyHead);
        readyHead = 0;
      }
      if (running === 0 && (stopped() || readyHead >= ready.length)) finish();
    };

    const onStop = (): void => {
      if (running === 0) finish();
    };
    stop?.addEventListener('abort', onStop);
    pump();
  });
}
