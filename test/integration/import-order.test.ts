// The order `niche import` imports paths in (src/import/dependency-order.ts): dependencies first, never
// more than `concurrency` at a time, dependants of a failure reported and never started, cycles found,
// a stop honoured, and a task that throws ending the run once the running tasks settled.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { runInDependencyOrder, type DependencyNode } from '../../src/import/dependency-order.js';

const node = (id: string, ...dependencies: string[]): DependencyNode => ({ id, dependencies });

describe('runInDependencyOrder', () => {
  it('starts a node only after its dependencies succeeded, at most `concurrency` at a time', async () => {
    // A wide layer over a deep chain, with self-references and references outside the set.
    const nodes: DependencyNode[] = [];
    for (let i = 0; i < 30; i++)
      nodes.push(node(`chain-${i}`, ...(i > 0 ? [`chain-${i - 1}`] : []), 'outside'));
    for (let i = 0; i < 40; i++) nodes.push(node(`wide-${i}`, 'chain-29', `wide-${i}`));
    nodes.reverse();
    const finished = new Set<string>();
    let running = 0;
    let peak = 0;
    const result = await runInDependencyOrder(
      nodes,
      async (n) => {
        for (const dep of n.dependencies) {
          if (dep !== n.id && dep !== 'outside') assert.ok(finished.has(dep), `${n.id} ran before ${dep}`);
        }
        running++;
        peak = Math.max(peak, running);
        await sleep(1);
        running--;
        finished.add(n.id);
        return true;
      },
      { concurrency: 5, onBlocked: () => assert.fail('nothing fails') },
    );
    assert.equal(finished.size, 70);
    assert.equal(peak, 5);
    assert.deepEqual(result, { cycle: [], notStarted: 0 });
  });

  it('reports every dependant of a failure with the dependency that stopped it', async () => {
    const blocked: string[] = [];
    const ran: string[] = [];
    const result = await runInDependencyOrder(
      [node('a'), node('b', 'a'), node('c', 'b'), node('d', 'b', 'ok'), node('ok'), node('e', 'ok')],
      (n) => {
        ran.push(n.id);
        return Promise.resolve(n.id !== 'a');
      },
      {
        concurrency: 2,
        onBlocked: (n, dependency) => blocked.push(`${n.id}<-${dependency.id}`),
      },
    );
    assert.deepEqual(ran.sort(), ['a', 'e', 'ok']);
    assert.deepEqual(blocked.sort(), ['b<-a', 'c<-b', 'd<-b']);
    assert.deepEqual(result, { cycle: [], notStarted: 0 });
  });

  it('finds nodes on (or behind) a cycle', async () => {
    const result = await runInDependencyOrder(
      [node('x', 'y'), node('y', 'x'), node('behind', 'x'), node('free')],
      () => Promise.resolve(true),
      { concurrency: 4, onBlocked: () => assert.fail('nothing fails') },
    );
    assert.deepEqual(result.cycle.map((n) => n.id).sort(), ['behind', 'x', 'y']);
  });

  it('starts nothing new once stopped, and counts what did not start', async () => {
    const stop = new AbortController();
    const ran: string[] = [];
    const nodes = Array.from({ length: 10 }, (_, i) => node(`n${i}`));
    const result = await runInDependencyOrder(
      nodes,
      async (n) => {
        ran.push(n.id);
        if (ran.length === 3) stop.abort();
        await sleep(1);
        return true;
      },
      { concurrency: 3, signal: stop.signal, onBlocked: () => assert.fail('nothing fails') },
    );
    assert.equal(ran.length, 3);
    assert.deepEqual(result, { cycle: [], notStarted: 7 });
  });

  it('rejects with the error of a task that throws, after the running tasks settled', async () => {
    const settled: string[] = [];
    await assert.rejects(
      runInDependencyOrder(
        [node('slow'), node('bad'), node('later'), node('after-bad', 'bad')],
        async (n) => {
          if (n.id === 'bad') throw new Error('the disk is full');
          await sleep(20);
          settled.push(n.id);
          return true;
        },
        { concurrency: 2, onBlocked: () => assert.fail('a fatal error blocks nobody') },
      ),
      /the disk is full/,
    );
    assert.deepEqual(settled, ['slow']);
  });

  it('finishes at once with no nodes', async () => {
    assert.deepEqual(
      await runInDependencyOrder([], () => Promise.resolve(true), {
        concurrency: 1,
        onBlocked: () => undefined,
      }),
      { cycle: [], notStarted: 0 },
    );
  });
});
