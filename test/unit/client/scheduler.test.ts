// The upload scheduler: a reference always finishes before its referrer starts, the parallelism bound is
// never exceeded, retryable failures are retried with growing delays, and a failure skips exactly the
// nodes that depend on it. Stopping starts nothing new but lets running tasks finish.
import assert from 'node:assert/strict';
import { setImmediate } from 'node:timers/promises';
import { describe, it } from 'node:test';
import {
  type GraphNode,
  type RetryPolicy,
  backoffDelay,
  DependencyCycleError,
  runGraph,
} from '../../../src/client/scheduler.js';

class Transient extends Error {}

const policy = (attempts = 4): RetryPolicy => ({
  attempts,
  baseDelayMs: 100,
  maxDelayMs: 1000,
  isRetryable: (error) => error instanceof Transient,
});

/** A random DAG: node i may depend on any node j < i. */
function randomDag(size: number, seed: number): GraphNode<null>[] {
  let state = seed;
  const random = (): number => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state / 2 ** 31;
  };
  const nodes: GraphNode<null>[] = [];
  for (let i = 0; i < size; i++) {
    const dependencies: string[] = [];
    for (let j = 0; j < i; j++) if (random() < 0.15) dependencies.push(`n${j}`);
    if (random() < 0.2) dependencies.push(`n${i}`); // self-reference
    if (random() < 0.2) dependencies.push('outside'); // already in the cache
    nodes.push({ id: `n${i}`, dependencies, value: null });
  }
  // Shuffle so input order is not a topological order.
  for (let i = nodes.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [nodes[i], nodes[j]] = [nodes[j] as GraphNode<null>, nodes[i] as GraphNode<null>];
  }
  return nodes;
}

const noSleep = async (): Promise<void> => {
  await setImmediate();
};

describe('runGraph', () => {
  it('starts a node only after all its dependencies finished, within the parallelism bound', async () => {
    for (const [seed, concurrency] of [
      [1, 1],
      [2, 3],
      [3, 4],
      [4, 16],
    ] as const) {
      const nodes = randomDag(60, seed);
      const finished = new Set<string>();
      let running = 0;
      let peak = 0;
      const outcomes = await runGraph(
        nodes,
        async (node) => {
          for (const dep of node.dependencies) {
            if (dep !== node.id && dep !== 'outside') {
              assert.ok(finished.has(dep), `${node.id} started before its dependency ${dep} finished`);
            }
          }
          running++;
          peak = Math.max(peak, running);
          assert.ok(running <= concurrency, `more than ${concurrency} tasks at once`);
          // Vary the durations so completion order differs from start order.
          for (let i = 0; i < (Number(node.id.slice(1)) % 5) + 1; i++) await setImmediate();
          running--;
          finished.add(node.id);
        },
        { concurrency, retry: policy(1) },
      );
      assert.equal(outcomes.size, nodes.length);
      assert.ok([...outcomes.values()].every((outcome) => outcome.status === 'done'));
      if (concurrency > 1) assert.ok(peak > 1, `parallelism was used (peak ${peak})`);
    }
  });

  it('retries retryable errors with exponential backoff, and fails after the last attempt', async () => {
    const delays: number[] = [];
    const attempts = new Map<string, number>();
    const nodes: GraphNode<null>[] = [
      { id: 'flaky', dependencies: [], value: null },
      { id: 'broken', dependencies: [], value: null },
      { id: 'refused', dependencies: [], value: null },
    ];
    const outcomes = await runGraph(
      nodes,
      (node, attempt) => {
        attempts.set(node.id, attempt);
        if (node.id === 'flaky' && attempt < 3) return Promise.reject(new Transient('503'));
        if (node.id === 'broken') return Promise.reject(new Transient('always 503'));
        if (node.id === 'refused') return Promise.reject(new Error('400 bad NAR'));
        return Promise.resolve();
      },
      {
        concurrency: 2,
        retry: policy(4),
        random: () => 0,
        sleep: async (ms) => {
          delays.push(ms);
          await setImmediate();
        },
      },
    );
    assert.deepEqual(outcomes.get('flaky'), { status: 'done', attempts: 3 });
    assert.equal(outcomes.get('broken')?.status, 'failed');
    assert.equal(attempts.get('broken'), 4);
    assert.equal(outcomes.get('refused')?.status, 'failed');
    assert.equal(attempts.get('refused'), 1, 'a non-retryable error is not retried');
    assert.deepEqual(
      delays.sort((a, b) => a - b),
      [100, 100, 200, 200, 400],
    );
    assert.equal(
      backoffDelay(policy(), 10, () => 0),
      1000,
      'capped',
    );
    assert.equal(
      backoffDelay(policy(), 1, () => 1),
      125,
      'jitter up to 25 %',
    );
    assert.equal(
      backoffDelay(policy(), 1, () => 0, 700),
      700,
      "at least the server's Retry-After",
    );
    assert.equal(
      backoffDelay(policy(), 1, () => 0, 60_000),
      1000,
      'within the cap',
    );
    assert.equal(
      backoffDelay(policy(), 3, () => 0, 50),
      400,
      'the backoff when it is longer',
    );
  });

  it('skips every transitive dependant of a failed node and nothing else', async () => {
    //   a ← b ← c      d ← e      (x ← y means y depends on x)
    //   a ← f → d
    const nodes: GraphNode<null>[] = [
      { id: 'c', dependencies: ['b'], value: null },
      { id: 'b', dependencies: ['a'], value: null },
      { id: 'a', dependencies: [], value: null },
      { id: 'e', dependencies: ['d'], value: null },
      { id: 'd', dependencies: [], value: null },
      { id: 'f', dependencies: ['a', 'd'], value: null },
    ];
    const started: string[] = [];
    const events: string[] = [];
    const outcomes = await runGraph(
      nodes,
      (node) => {
        started.push(node.id);
        return node.id === 'a' ? Promise.reject(new Error('refused')) : Promise.resolve();
      },
      {
        concurrency: 4,
        retry: policy(),
        onEvent: (event) => {
          if (event.type !== 'start') events.push(`${event.type}:${event.node.id}`);
        },
      },
    );
    assert.equal(outcomes.get('a')?.status, 'failed');
    assert.deepEqual(outcomes.get('b'), { status: 'skipped', dependency: 'a' });
    assert.deepEqual(outcomes.get('c'), { status: 'skipped', dependency: 'b' });
    assert.deepEqual(outcomes.get('f'), { status: 'skipped', dependency: 'a' });
    assert.equal(outcomes.get('d')?.status, 'done');
    assert.equal(outcomes.get('e')?.status, 'done');
    assert.deepEqual(started.sort(), ['a', 'd', 'e']);
    assert.ok(events.includes('failed:a') && events.includes('skipped:c'));
  });

  it('stops starting tasks when stopped, lets running ones finish, and cancels the rest', async () => {
    const stop = new AbortController();
    const nodes: GraphNode<null>[] = Array.from({ length: 10 }, (_, i) => ({
      id: `p${i}`,
      dependencies: [],
      value: null,
    }));
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const started: string[] = [];
    const finished: string[] = [];
    const result = runGraph(
      nodes,
      async (node) => {
        started.push(node.id);
        await gate;
        finished.push(node.id);
      },
      { concurrency: 3, retry: policy(), stopSignal: stop.signal },
    );
    await setImmediate();
    stop.abort();
    release();
    const outcomes = await result;
    assert.deepEqual(started, ['p0', 'p1', 'p2']);
    assert.deepEqual(finished, ['p0', 'p1', 'p2'], 'in-flight tasks finished');
    const statuses = [...outcomes.values()].map((outcome) => outcome.status);
    assert.equal(statuses.filter((status) => status === 'done').length, 3);
    assert.equal(statuses.filter((status) => status === 'cancelled').length, 7);
  });

  it('cancels a node waiting to retry when stopped', async () => {
    const stop = new AbortController();
    const outcomes = await runGraph(
      [{ id: 'x', dependencies: [], value: null }],
      () => Promise.reject(new Transient('503')),
      {
        concurrency: 1,
        retry: policy(5),
        stopSignal: stop.signal,
        sleep: async () => {
          stop.abort();
          await setImmediate();
        },
      },
    );
    assert.deepEqual(outcomes.get('x'), { status: 'cancelled' });
  });

  it('reports a dependency cycle instead of hanging, and handles an empty graph', async () => {
    const outcomes = await runGraph(
      [
        { id: 'a', dependencies: ['b'], value: null },
        { id: 'b', dependencies: ['a'], value: null },
        { id: 'c', dependencies: [], value: null },
      ],
      () => Promise.resolve(),
      { concurrency: 2, retry: policy(), sleep: noSleep },
    );
    assert.equal(outcomes.get('c')?.status, 'done');
    const a = outcomes.get('a');
    assert.ok(a?.status === 'failed' && a.error instanceof DependencyCycleError);
    assert.equal((await runGraph([], () => Promise.resolve(), { concurrency: 1, retry: policy() })).size, 0);
  });
});
