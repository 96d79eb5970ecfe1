// The GC plan against brute force on random DAGs (shared references, diamonds, shared NAR files, pins,
// random access times): what retention keeps is exactly the closure of the recently used and pinned
// paths; a quota evicts least recently used first and stops at the low-water mark; every plan removes a
// path only together with (and after) all of its referrers.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { accessResolutionMs } from '../../../src/cache/access-resolution.js';
import { planCacheGc, QUOTA_LOW_WATER, type GcGraph } from '../../../src/cache/gc-plan.js';

/** A small deterministic generator (mulberry32). */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

interface Dag {
  readonly graph: GcGraph;
  /** references[i]: the paths i references (all with a lower index). */
  readonly references: number[][];
  readonly pinned: number[];
  readonly fileOf: number[];
}

function randomDag(seed: number, count: number): Dag {
  const next = random(seed);
  const references: number[][] = [];
  const fileOf: number[] = [];
  for (let index = 0; index < count; index += 1) {
    const refs = new Set<number>();
    const wanted = Math.floor(next() * 5);
    for (let k = 0; k < wanted && index > 0; k += 1) refs.add(Math.floor(next() * index));
    references.push([...refs]);
    // About one path in eight shares its NAR file with an earlier one.
    fileOf.push(index > 0 && next() < 0.125 ? (fileOf[Math.floor(next() * index)] ?? index) : index);
  }
  // Hash parts sort in index order, as the loader guarantees.
  const hashParts = Array.from({ length: count }, (_, index) => index.toString().padStart(8, '0'));
  const access = Float64Array.from({ length: count }, () => Math.floor(next() * 1000));
  const fileSize = Float64Array.from({ length: count }, (_, index) => 10 + ((fileOf[index] ?? 0) % 7));
  const users = new Map<number, number>();
  for (const file of fileOf) users.set(file, (users.get(file) ?? 0) + 1);
  const sharedFiles = new Map<number, string>();
  fileOf.forEach((file, index) => {
    if ((users.get(file) ?? 0) > 1) sharedFiles.set(index, `f${file}`);
  });
  const refStart = new Int32Array(count + 1);
  references.forEach((refs, index) => (refStart[index + 1] = (refStart[index] ?? 0) + refs.length));
  const refs = Int32Array.from(references.flat());
  const pinned = Array.from({ length: Math.floor(next() * 3) }, () => Math.floor(next() * count));
  return { graph: { hashParts, access, fileSize, sharedFiles, refStart, refs }, references, pinned, fileOf };
}

function closure(dag: Dag, roots: Iterable<number>): Set<number> {
  const seen = new Set<number>();
  const stack = [...roots];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    if (seen.has(node)) continue;
    seen.add(node);
    stack.push(...(dag.references[node] ?? []));
  }
  return seen;
}

function storedBytes(dag: Dag, paths: Iterable<number>): number {
  const files = new Map<number, number>();
  for (const index of paths) files.set(dag.fileOf[index] ?? index, dag.graph.fileSize[index] ?? 0);
  return [...files.values()].reduce((sum, size) => sum + size, 0);
}

/** Latest access of the path or of anything referencing it, brute force (pins count as forever). */
function effectiveAccess(dag: Dag): number[] {
  const count = dag.references.length;
  const pinnedClosure = closure(dag, dag.pinned);
  return Array.from({ length: count }, (_, target) => {
    if (pinnedClosure.has(target)) return Infinity;
    let latest = -Infinity;
    for (let index = 0; index < count; index += 1) {
      if (closure(dag, [index]).has(target)) latest = Math.max(latest, dag.graph.access[index] ?? 0);
    }
    return latest;
  });
}

function assertReferrersFirst(dag: Dag, victims: Int32Array): void {
  const position = new Map<number, number>();
  victims.forEach((index, at) => position.set(index, at));
  dag.references.forEach((refs, referrer) => {
    for (const target of refs) {
      const targetAt = position.get(target);
      if (targetAt === undefined) continue;
      const referrerAt = position.get(referrer);
      assert.ok(referrerAt !== undefined, `${target} goes but its referrer ${referrer} stays`);
      assert.ok(referrerAt < targetAt, `${target} goes before its referrer ${referrer}`);
    }
  });
}

void describe('planCacheGc', () => {
  void it('retention removes exactly what the recent and pinned paths do not need', () => {
    for (let seed = 1; seed <= 60; seed += 1) {
      const dag = randomDag(seed, 40 + (seed % 30));
      const now = 1000;
      const retentionMs = 300 + ((seed * 37) % 500);
      const plan = planCacheGc(dag.graph, {
        now,
        retentionMs,
        maxSize: undefined,
        storedBytes: storedBytes(dag, dag.references.keys()),
        pinned: dag.pinned,
      });
      const recent = dag.references
        .map((_refs, index) => index)
        // Access times are recorded at a resolution: a path goes once retention and resolution have passed.
        .filter(
          (index) => (dag.graph.access[index] ?? 0) >= now - retentionMs - accessResolutionMs(retentionMs),
        );
      const kept = closure(dag, [...recent, ...dag.pinned]);
      const expected = dag.references.map((_refs, index) => index).filter((index) => !kept.has(index));
      assert.deepEqual(
        [...plan.victims].sort((a, b) => a - b),
        expected,
        `seed ${seed}`,
      );
      assert.equal(plan.byRetention, expected.length);
      assertReferrersFirst(dag, plan.victims);
      assert.equal(plan.freedBytes, storedBytes(dag, dag.references.keys()) - storedBytes(dag, kept));
    }
  });

  void it('a quota evicts the least recently used first, referrers first, down to the low-water mark', () => {
    for (let seed = 100; seed <= 140; seed += 1) {
      const dag = randomDag(seed, 30 + (seed % 20));
      const all = dag.references.map((_refs, index) => index);
      const total = storedBytes(dag, all);
      const maxSize = Math.floor(total * (0.3 + (seed % 5) / 10));
      const plan = planCacheGc(dag.graph, {
        now: 1000,
        retentionMs: undefined,
        maxSize,
        storedBytes: total,
        pinned: dag.pinned,
      });
      assertReferrersFirst(dag, plan.victims);
      const gone = new Set(plan.victims);
      const left = all.filter((index) => !gone.has(index));
      const protectedPaths = closure(dag, dag.pinned);
      assert.ok(
        plan.victims.every((index) => !protectedPaths.has(index)),
        'a pinned closure stays',
      );
      assert.equal(plan.freedBytes, total - storedBytes(dag, left));
      const target = Math.floor(maxSize * QUOTA_LOW_WATER);
      const evictable = left.filter((index) => !protectedPaths.has(index));
      assert.ok(
        storedBytes(dag, left) <= target || evictable.length === 0,
        `seed ${seed}: ${storedBytes(dag, left)} left above ${target} with ${evictable.length} evictable`,
      );
      // Least recently used first: nothing that stays was used less recently than anything that went.
      const effective = effectiveAccess(dag);
      const newestGone = Math.max(...plan.victims.map((index) => effective[index] ?? 0));
      const oldestLeft = Math.min(...evictable.map((index) => effective[index] ?? 0));
      assert.ok(newestGone <= oldestLeft, `seed ${seed}: evicted ${newestGone} but kept ${oldestLeft}`);
      // Without need, no eviction: stopping one path earlier would still be above the target.
      if (plan.victims.length > 0) {
        const last = plan.victims[plan.victims.length - 1] as number;
        assert.ok(storedBytes(dag, [...left, last]) > target || dag.graph.sharedFiles.has(last));
      }
    }
  });

  void it('keeps everything without a policy, and within quota', () => {
    const dag = randomDag(7, 50);
    const total = storedBytes(dag, dag.references.keys());
    for (const maxSize of [undefined, total, total * 2]) {
      const plan = planCacheGc(dag.graph, {
        now: 1000,
        retentionMs: undefined,
        maxSize,
        storedBytes: total,
        pinned: [],
      });
      assert.equal(plan.victims.length, 0);
    }
  });

  void it('keeps paths on a reference cycle and what they reference', () => {
    // 0 <- 1 <- 2 -> 1 (a cycle between 1 and 2), and 3 alone; all long unused.
    const graph: GcGraph = {
      hashParts: ['a', 'b', 'c', 'd'],
      access: Float64Array.from([0, 0, 0, 0]),
      fileSize: Float64Array.from([1, 1, 1, 1]),
      sharedFiles: new Map(),
      refStart: Int32Array.from([0, 0, 2, 3, 3]),
      refs: Int32Array.from([0, 2, 1]),
    };
    const plan = planCacheGc(graph, {
      now: 1000,
      retentionMs: 10,
      maxSize: undefined,
      storedBytes: 4,
      pinned: [],
    });
    assert.deepEqual([...plan.victims], [3]);
    assert.equal(plan.cyclic, 3);
  });
});
