// `niche fsck`: every stored NAR file read back and hashed against its record (file hash and size), with
// the paths that are therefore broken: those whose NAR is missing or corrupt, and every path of the cache
// that references one of them, directly or not (a client substituting it would fail). With `repair`, the
// broken paths are withdrawn, referrers first, so that the cache serves whole closures again, and the bad
// NAR record and blob are removed, so that a new push of the same path stores a good copy (a push of a
// file the cache already records is otherwise deduplicated onto the bad one). A bad NAR file is withdrawn
// from every cache that uses it.
//
// Streams each blob once through SHA-256 (a few at a time), in pages of records: memory is bounded by the
// page and the problems found.
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';

import type { CacheRecord, NarRecord, PathRecord } from '../db/metadata-store.js';
import { Hash } from '../nix/hash.js';
import type { CacheService } from './cache-service.js';

const PAGE = 500;
const CHECKS_AT_ONCE = 4;
const REFERRERS_LIMIT = 1_000_000;

export type NarProblem = 'missing' | 'corrupt';

export interface FsckFinding {
  readonly nar: NarRecord;
  readonly problem: NarProblem;
  /** Broken store paths by cache: the NAR's paths and their referrers. */
  readonly broken: ReadonlyMap<string, readonly string[]>;
}

export interface FsckReport {
  readonly checked: number;
  readonly bytes: number;
  readonly findings: FsckFinding[];
  /** Paths withdrawn by the repair, by cache. */
  readonly withdrawn: ReadonlyMap<string, number>;
}

export interface FsckOptions {
  /** Only NAR files this cache's paths use. */
  readonly cache?: CacheRecord | undefined;
  readonly repair?: boolean;
  /** Called after each page with the NAR files checked so far. */
  readonly progress?: (checked: number, bytes: number) => void;
}

export async function fsck(service: CacheService, options: FsckOptions = {}): Promise<FsckReport> {
  const db = service.db;
  const caches = await db.listCaches();
  const findings: FsckFinding[] = [];
  let checked = 0;
  let bytes = 0;
  let after = '';
  for (;;) {
    const page = await db.listNars(after, PAGE);
    let selected = page;
    if (options.cache !== undefined) {
      const cacheId = options.cache.id;
      const used = await Promise.all(
        page.map(async (nar) => (await db.findPathsByFile(cacheId, nar.fileHash)).length > 0),
      );
      selected = page.filter((_nar, index) => used[index] === true);
    }
    for (let start = 0; start < selected.length; start += CHECKS_AT_ONCE) {
      const batch = selected.slice(start, start + CHECKS_AT_ONCE);
      const results = await Promise.all(batch.map((nar) => checkNar(service, nar)));
      for (const [index, problem] of results.entries()) {
        const nar = batch[index] as NarRecord;
        checked += 1;
        bytes += nar.fileSize;
        if (problem !== undefined)
          findings.push({ nar, problem, broken: await brokenPaths(service, caches, nar) });
      }
    }
    options.progress?.(checked, bytes);
    const last = page.at(-1);
    if (last === undefined || page.length < PAGE) break;
    after = last.fileHash;
  }
  const withdrawn = new Map<string, number>();
  if (options.repair === true) {
    for (const finding of findings) {
      for (const cache of caches) {
        const paths = finding.broken.get(cache.name);
        if (paths === undefined || paths.length === 0) continue;
        const removed = await withdraw(service, cache, paths);
        withdrawn.set(cache.name, (withdrawn.get(cache.name) ?? 0) + removed);
      }
      // The record goes with any path or upload still using it (a path pushed meanwhile), then the blob.
      await db.deleteNar(finding.nar.fileHash);
      await service.blobs.delete(finding.nar.blobKey);
      service.forgetNarInfos();
    }
  }
  return { checked, bytes, findings, withdrawn };
}

/** Reads the blob through SHA-256; undefined if it matches its record. */
async function checkNar(service: CacheService, nar: NarRecord): Promise<NarProblem | undefined> {
  const opened = await service.blobs.get(nar.blobKey);
  if (opened === undefined) return 'missing';
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of opened.stream as AsyncIterable<Buffer> & Readable) {
    hash.update(chunk);
    size += chunk.length;
  }
  const digest = new Hash('sha256', hash.digest()).toNix32();
  return digest === nar.fileHash && size === nar.fileSize ? undefined : 'corrupt';
}

/** The store paths of every cache using the NAR, with all their referrers, transitively. */
async function brokenPaths(
  service: CacheService,
  caches: readonly CacheRecord[],
  nar: NarRecord,
): Promise<Map<string, string[]>> {
  const broken = new Map<string, string[]>();
  for (const cache of caches) {
    const start = await service.db.findPathsByFile(cache.id, nar.fileHash);
    if (start.length === 0) continue;
    const ordered = await referrersFirst(service, cache, start);
    const names: string[] = [];
    for (const hashPart of ordered) {
      const found = await service.db.getPath(cache.id, hashPart);
      if (found !== undefined) names.push(found.path.storePath);
    }
    broken.set(cache.name, names);
  }
  return broken;
}

/** `start` and everything referencing it in the cache, each path after all of its referrers. */
async function referrersFirst(
  service: CacheService,
  cache: CacheRecord,
  start: readonly string[],
): Promise<string[]> {
  const referrersOf = new Map<string, string[]>();
  const queue = [...start];
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    if (referrersOf.has(next)) continue;
    const referrers = await service.db.findReferrers(cache.id, next, REFERRERS_LIMIT);
    referrersOf.set(next, referrers);
    queue.push(...referrers.filter((referrer) => !referrersOf.has(referrer)));
  }
  // Depth-first, a path after its referrers; iterative, since closures can be deep.
  const order: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  for (const root of referrersOf.keys()) {
    const stack: { node: string; index: number }[] = [{ node: root, index: 0 }];
    if (state.has(root)) continue;
    state.set(root, 'open');
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as { node: string; index: number };
      const referrers = referrersOf.get(top.node) ?? [];
      const referrer = referrers[top.index];
      top.index += 1;
      if (referrer === undefined) {
        state.set(top.node, 'done');
        order.push(top.node);
        stack.pop();
      } else if (!state.has(referrer)) {
        state.set(referrer, 'open');
        stack.push({ node: referrer, index: 0 });
      }
    }
  }
  // Post-order over referrer edges: a path is placed after everything that references it.
  return order;
}

/** Withdraws the broken paths (store paths), referrers first; returns how many were removed. */
async function withdraw(
  service: CacheService,
  cache: CacheRecord,
  storePaths: readonly string[],
): Promise<number> {
  const hashParts = storePaths.map((path) =>
    path.slice(path.lastIndexOf('/') + 1, path.lastIndexOf('/') + 33),
  );
  const removed: PathRecord[] = [];
  for (const hashPart of hashParts) {
    // Unconditional: a broken path goes even if pinned; its referrers went before it.
    const path = (await service.db.getPath(cache.id, hashPart))?.path;
    if (path !== undefined && (await service.db.deletePath(cache.id, hashPart))) removed.push(path);
  }
  await service.afterPathsRemoved(cache, removed);
  return removed.length;
}
