// Runs one task per store path in dependency order, for `niche import`: the cache accepts a path only once
// every path it references is there, so a path starts only after each of its dependencies (those in the
// same set; others are the caller's business) succeeded, with at most `concurrency` tasks at a time. A
// path whose dependency failed never starts, and neither do the paths depending on it; each is reported
// with the dependency that stopped it. What is left at the end without having run sits on a cycle.
//
// Kept apart from src/client/scheduler.ts (push's runner, with retries and per-node outcome records) on
// purpose: an import holds up to ~100k paths, so this runner keeps only integer state per path, reports
// as it goes instead of returning outcomes, and leaves retrying to the layers that know what is transient.
export interface DependencyNode {
  readonly id: string;
  /** Ids that must succeed first. Ids not in the run, and the node's own id, are ignored. */
  readonly dependencies: readonly string[];
}

export interface DependencyRunOptions<N extends DependencyNode> {
  readonly concurrency: number;
  /** Once aborted, nothing new starts; running tasks finish. */
  readonly signal?: AbortSignal | undefined;
  /** `node` will not run because `dependency`, one of its dependencies, failed or will not run either. */
  readonly onBlocked: (node: N, dependency: N) => void;
}

export interface DependencyRunResult<N extends DependencyNode> {
  /** Nodes that never became ready because they depend on each other (none in a valid binary cache). */
  readonly cycle: readonly N[];
  /** Nodes not started because the signal aborted. */
  readonly notStarted: number;
}

const WAITING = 0;
const RUNNING = 1;
const SUCCEEDED = 2;
const FAILED = 3;
const BLOCKED = 4;

/**
 * Runs `task` for every node, dependencies first. The task resolves true on success and false on failure
 * (which blocks its dependants). If a task rejects, nothing new starts, and once the running tasks have
 * settled the run rejects with that error.
 */
export async function runInDependencyOrder<N extends DependencyNode>(
  nodes: readonly N[],
  task: (node: N) => Promise<boolean>,
  options: DependencyRunOptions<N>,
): Promise<DependencyRunResult<N>> {
  const concurrency = Math.max(1, Math.floor(options.concurrency));
  const index = new Map<string, number>();
  nodes.forEach((node, i) => index.set(node.id, i));
  if (index.size !== nodes.length) throw new Error('runInDependencyOrder: duplicate node ids');

  const state = new Uint8Array(nodes.length);
  const waitingOn = new Uint32Array(nodes.length);
  const dependants: (number[] | undefined)[] = new Array<number[] | undefined>(nodes.length);
  nodes.forEach((node, i) => {
    const seen = new Set<number>();
    for (const id of node.dependencies) {
      const dep = index.get(id);
      if (dep === undefined || dep === i || seen.has(dep)) continue;
      seen.add(dep);
      (dependants[dep] ??= []).push(i);
    }
    waitingOn[i] = seen.size;
  });
  const ready: number[] = [];
  for (let i = 0; i < nodes.length; i++) if (waitingOn[i] === 0) ready.push(i);

  const at = (i: number): N => nodes[i] as N;
  const stopped = (): boolean => options.signal?.aborted === true;

  const block = (failed: number): void => {
    const pending = [failed];
    for (let parent = pending.pop(); parent !== undefined; parent = pending.pop()) {
      for (const dependant of dependants[parent] ?? []) {
        if (state[dependant] !== WAITING) continue;
        state[dependant] = BLOCKED;
        options.onBlocked(at(dependant), at(parent));
        pending.push(dependant);
      }
    }
  };

  return new Promise((resolve, reject) => {
    let running = 0;
    let readyHead = 0;
    let failure: { error: Error } | undefined;
    let finished = false;

    const finish = (): void => {
      if (finished) return;
      finished = true;
      options.signal?.removeEventListener('abort', onAbort);
      if (failure !== undefined) {
        reject(failure.error);
        return;
      }
      let notStarted = 0;
      const cycle: N[] = [];
      for (let i = 0; i < nodes.length; i++) {
        if (state[i] !== WAITING) continue;
        if (stopped()) notStarted++;
        else cycle.push(at(i));
      }
      resolve({ cycle, notStarted });
    };

    const settle = (i: number, succeeded: boolean): void => {
      running--;
      state[i] = succeeded ? SUCCEEDED : FAILED;
      if (succeeded) {
        for (const dependant of dependants[i] ?? []) {
          const left = (waitingOn[dependant] ?? 1) - 1;
          waitingOn[dependant] = left;
          if (left === 0 && state[dependant] === WAITING) ready.push(dependant);
        }
      } else if (failure === undefined) {
        block(i);
      }
      dependants[i] = undefined;
      pump();
    };

    const pump = (): void => {
      while (failure === undefined && !stopped() && running < concurrency && readyHead < ready.length) {
        const i = ready[readyHead++] ?? -1;
        if (state[i] !== WAITING) continue;
        state[i] = RUNNING;
        running++;
        task(at(i)).then(
          (succeeded) => {
            settle(i, succeeded);
          },
          (error: unknown) => {
            failure ??= { error: error instanceof Error ? error : new Error(String(error)) };
            settle(i, false);
          },
        );
      }
      // Keep the queue from holding every index ever made ready.
      if (readyHead > 4096 && readyHead * 2 > ready.length) {
        ready.splice(0, readyHead);
        readyHead = 0;
      }
      if (running === 0) finish();
    };

    function onAbort(): void {
      if (running === 0) finish();
    }
    options.signal?.addEventListener('abort', onAbort, { once: true });
    pump();
  });
}
