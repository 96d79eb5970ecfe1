// A cache filled with a random DAG of real (tiny) paths through the cache service, as uploads arrive, and
// the lifecycle invariant checked by walking what the cache serves: every reference of every path is in
// the cache, and every path's NAR downloads and hashes to its NarHash.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import assert from 'node:assert/strict';

import { createCacheWithKey } from '../../src/cache/admin-service.js';
import type { CacheService } from '../../src/cache/cache-service.js';
import type { CacheRecord } from '../../src/db/metadata-store.js';
import { encodeNix32 } from '../../src/nix/nix32.js';
import { fakeBaseName, fixture, narInfoText, type NarFixture } from './nar-fixtures.js';

export interface WorldPath {
  readonly index: number;
  readonly baseName: string;
  readonly hashPart: string;
  readonly references: number[];
  readonly fx: NarFixture;
}

/** A deterministic generator (mulberry32). */
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * `count` paths; path i references up to four earlier ones (shared references and diamonds), and about one
 * in six has the same contents (so the same NAR file) as an earlier one.
 */
export async function buildWorld(seed: number, count: number, label: string): Promise<WorldPath[]> {
  const next = random(seed);
  const paths: WorldPath[] = [];
  const contentsOf: string[] = [];
  for (let index = 0; index < count; index += 1) {
    const refs = new Set<number>();
    const wanted = Math.floor(next() * 5);
    for (let k = 0; k < wanted && index > 0; k += 1) refs.add(Math.floor(next() * index));
    const contents =
      index > 0 && next() < 1 / 6
        ? (contentsOf[Math.floor(next() * index)] ?? `${label} ${index}`)
        : `${label} contents of path ${index} ${'x'.repeat(index * 13)}`;
    contentsOf.push(contents);
    const baseName = fakeBaseName(`${label}-${index}`);
    paths.push({
      index,
      baseName,
      hashPart: baseName.slice(0, 32),
      references: [...refs],
      fx: await fixture(contents, 'zstd'),
    });
  }
  return paths;
}

export async function newCache(service: CacheService, name: string): Promise<CacheRecord> {
  return createCacheWithKey(service.db, { name, isPublic: true, priority: 40 });
}

/** Uploads the path as Nix would: the NAR, then the narinfo (its references must be there). */
export async function upload(
  service: CacheService,
  cache: CacheRecord,
  path: WorldPath,
  all: readonly WorldPath[],
) {
  await service.uploadNar(cache, path.fx.fileName, Readable.from([path.fx.file]), {
    contentLength: path.fx.file.length,
  });
  const references = path.references.map((index) => all[index]?.baseName ?? '');
  await service.putNarInfo(cache, path.hashPart, narInfoText(path.baseName, path.fx, { references }));
}

/** Reads the cache's paths and checks the invariant; returns the hash parts it serves. */
export async function assertInvariant(service: CacheService, cache: CacheRecord): Promise<Set<string>> {
  const served = new Map<string, readonly string[]>();
  for (let after = ''; ;) {
    const page = await service.db.listPaths(cache.id, { after, limit: 500 });
    for (const { path } of page) served.set(path.hashPart, path.references);
    const last = page.at(-1);
    if (last === undefined) break;
    after = last.path.hashPart;
  }
  for (const [hashPart, references] of served) {
    for (const reference of references) {
      assert.ok(
        served.has(reference.slice(0, 32)),
        `cache ${cache.name}: ${hashPart} references ${reference}, which the cache does not serve`,
      );
    }
    const text = await service.getNarInfo(cache, hashPart);
    assert.ok(text !== undefined, `no narinfo for ${hashPart}`);
    const url = /^URL: nar\/(.+)$/m.exec(text)?.[1] ?? '';
    const narHash = /^NarHash: sha256:(.+)$/m.exec(text)?.[1] ?? '';
    const found = await service.findNar(cache, url, () => Promise.reject(new Error('no principal')));
    assert.ok(found !== undefined, `${hashPart}: its NAR ${url} is not served`);
    const plain = await service.openPlainNar(cache, found.nar);
    assert.ok(plain !== undefined, `${hashPart}: the blob of ${url} is missing`);
    const nar = await buffer(plain);
    assert.equal(encodeNix32(createHash('sha256').update(nar).digest()), narHash, `${hashPart}: NAR hash`);
  }
  return new Set(served.keys());
}

/** The paths kept by retention: the closure of those accessed recently and of the pinned ones. */
export function expectedKept(paths: readonly WorldPath[], roots: Iterable<number>): Set<number> {
  const seen = new Set<number>();
  const stack = [...roots];
  for (let index = stack.pop(); index !== undefined; index = stack.pop()) {
    if (seen.has(index)) continue;
    seen.add(index);
    stack.push(...(paths[index]?.references ?? []));
  }
  return seen;
}
