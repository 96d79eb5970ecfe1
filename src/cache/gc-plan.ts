// Which paths of one cache garbage collection removes: pure computation over the cache's reference graph,
// no I/O (src/cache/gc.ts loads the graph and carries the plan out).
//
// A path is kept while it is pinned, within retention, or referenced by a kept path. All three follow from
// one number per path, its effective access: the latest access of the path or of any path that references
// it, directly or not (a pinned path counts as accessed forever). A path referenced by a kept path has an
// effective access at least as late as its referrer's, so:
// - retention removes the paths whose effective access is older than the cutoff, a set that contains
//   every referrer of each of its paths;
// - a quota removes paths in order of effective access, oldest first, ties broken referrers first: every
//   prefix of that order again contains every referrer of each of its paths.
// Removing in that order (referrers before what they reference) never leaves a kept path with a missing
// reference, and the store checks each removal again atomically (deletePathsIfUnused), since accesses and
// uploads go on while GC runs.

import { accessResolutionMs } from './access-resolution.js';

/** The reference graph of one cache: paths by index (sorted by hash part), edges as adjacency arrays. */
export interface GcGraph {
  /** The paths' hash parts, sorted (planning only counts them; src/cache/gc.ts keeps them packed). */
  readonly hashParts: { readonly length: number };
  /** Own last access of each path (ms since the epoch). */
  readonly access: Float64Array;
  /** Bytes of each path's NAR file. */
  readonly fileSize: Float64Array;
  /** For paths whose NAR file another path of the cache also uses: the file hash. */
  readonly sharedFiles: ReadonlyMap<number, string>;
  /** The references of path i are refs[refStart[i] … refStart[i + 1]) (other paths of the cache only). */
  readonly refStart: Int32Array;
  readonly refs: Int32Array;
}

export interface GcPolicy {
  readonly now: number;
  /** Paths whose effective access is older than now − retention go; undefined: no retention. */
  readonly retentionMs: number | undefined;
  /** Stored bytes above which the least recently used paths go; undefined: no quota. */
  readonly maxSize: number | undefined;
  /** What the cache stores now (each NAR file once). */
  readonly storedBytes: number;
  /** Indices of pinned paths (unexpired pins). */
  readonly pinned: readonly number[];
}

/** A quota is met by collecting down to this fraction of it, so GC does not run at every new push. */
export const QUOTA_LOW_WATER = 0.9;

export interface GcPlan {
  /** Indices of the paths to remove, referrers before the paths they reference. */
  readonly victims: Int32Array;
  /** How many of the victims are there because of retention (the first ones); the rest, the quota. */
  readonly byRetention: number;
  /** The stored bytes the removals free (a NAR file is freed with the last path using it). */
  readonly freedBytes: number;
  /** Paths on a reference cycle (not possible for Nix store paths): kept, and counted here. */
  readonly cyclic: number;
}

export function planCacheGc(graph: GcGraph, policy: GcPolicy): GcPlan {
  const count = graph.hashParts.length;
  const effective = Float64Array.from(graph.access);
  for (const index of policy.pinned) effective[index] = Infinity;

  // Kahn's order from the paths nothing references down to the leaves, carrying the latest access along.
  const referrers = new Int32Array(count);
  for (const target of graph.refs) referrers[target] = (referrers[target] ?? 0) + 1;
  const order = new Int32Array(count);
  let head = 0;
  let tail = 0;
  for (let index = 0; index < count; index += 1) if (referrers[index] === 0) order[tail++] = index;
  while (head < tail) {
    const index = order[head++] as number;
    const mine = effective[index] as number;
    const end = graph.refStart[index + 1] as number;
    for (let edge = graph.refStart[index] as number; edge < end; edge += 1) {
      const target = graph.refs[edge] as number;
      if ((effective[target] as number) < mine) effective[target] = mine;
      const left = (referrers[target] as number) - 1;
      referrers[target] = left;
      if (left === 0) order[tail++] = target;
    }
  }
  const cyclic = count - tail;
  const rank = new Int32Array(count);
  for (let position = 0; position < tail; position += 1) rank[order[position] as number] = position;

  // Candidates in removal order: oldest effective access first, referrers first among equals. Typed
  // arrays, like the graph: a million-path cache must not need a million-element array on the JS heap.
  const candidates = new Int32Array(tail);
  let candidateCount = 0;
  for (let position = 0; position < tail; position += 1) {
    const index = order[position] as number;
    if ((effective[index] as number) !== Infinity) candidates[candidateCount++] = index;
  }
  const sorted = candidates
    .subarray(0, candidateCount)
    .sort(
      (a, b) =>
        (effective[a] as number) - (effective[b] as number) || (rank[a] as number) - (rank[b] as number),
    );

  // Paths sharing a NAR file free it only with the last of them.
  const fileUsers = new Map<string, number>();
  for (const file of graph.sharedFiles.values()) fileUsers.set(file, (fileUsers.get(file) ?? 0) + 1);
  let stored = policy.storedBytes;
  let freed = 0;
  const take = (index: number): void => {
    const file = graph.sharedFiles.get(index);
    let bytes = graph.fileSize[index] as number;
    if (file !== undefined) {
      const users = (fileUsers.get(file) ?? 1) - 1;
      fileUsers.set(file, users);
      if (users > 0) bytes = 0;
    }
    stored -= bytes;
    freed += bytes;
  };

  // The victims are the first `next` of the sorted candidates.
  let next = 0;
  if (policy.retentionMs !== undefined) {
    // Access times are recorded at a resolution (src/cache/access-tracker.ts): one may be that much older
    // than the access it stands for, so a path goes only once retention plus resolution have passed.
    const cutoff = policy.now - policy.retentionMs - accessResolutionMs(policy.retentionMs);
    while (next < candidateCount && (effective[sorted[next] as number] as number) < cutoff) {
      take(sorted[next++] as number);
    }
  }
  const byRetention = next;
  if (policy.maxSize !== undefined && stored > policy.maxSize) {
    const target = Math.floor(policy.maxSize * QUOTA_LOW_WATER);
    while (next < candidateCount && stored > target) {
      take(sorted[next++] as number);
    }
  }
  return { victims: sorted.slice(0, next), byRetention, freedBytes: freed, cyclic };
}
