// The synthetic cache of `npm run bench:gc` (bench/gc.ts): N paths with a reference DAG, NAR files (a few
// shared by two paths) and access times, generated in memory from a seed, then written straight into the
// metadata store with bulk SQL (rows exactly as recordNarUpload + addPath + recordAccesses leave them:
// nars, paths with their refs JSON, path_refs, cache_usage) and as empty blob files in the fs blob store.
// Uploading a million paths through the HTTP API would take hours; the SQL takes a minute.
//
// The shape, chosen to look like a CI cache that has been pushed to for `SPAN_DAYS`:
// - paths are pushed at a steady rate over the span (path i at the i-th moment);
// - each path has a depth level (1 to 15; the first 0.1% of paths, the compilers and libcs everything
//   depends on, are the base at level 0) and references 0 to 8 earlier paths of lower levels: some from the
//   base, most of them recent (a quadratic bias into the last 0.25% of paths: a build's inputs were built
//   shortly before it). Levels bound how far back a closure reaches, as in a real package set, where a
//   new build does not drag the whole history of its dependencies along;
// - 3% of paths use the NAR file of an earlier path (identical contents under another name);
// - 75% of paths were never downloaded after their push; the others were last downloaded at a uniform
//   moment between their push and now;
// - file sizes are log-normal around 200 KB (the blobs on disk are empty: GC never reads them, and a
//   million 4 KiB blocks would be 4 GiB).
// With a retention of 30 days about 37% of the paths go (the exact count is computed with the GC's own
// planner, src/cache/gc-plan.ts, and checked against what GC reports).

import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { NIX32_ALPHABET } from '../src/nix/nix32.js';
import { planCacheGc, type GcGraph } from '../src/cache/gc-plan.js';
import { accessResolutionMs } from '../src/cache/access-resolution.js';

export const SPAN_DAYS = 120;
export const RETENTION_DAYS = 30;
const DAY_MS = 86_400_000;
const RECENT_FRACTION = 0.0025;
const LEVELS = 16;
const BASE_FRACTION = 0.001;
const BASE_REF_PROBABILITY = 0.15;
const SHARED_FILE_PROBABILITY = 0.03;
const NEVER_DOWNLOADED = 0.75;
/** Blobs without a record (crash leftovers) put in the blob directory, as a fraction of the paths. */
const ORPHAN_FRACTION = 0.002;

export interface GcData {
  readonly count: number;
  readonly now: number;
  readonly hashParts: string[];
  readonly names: string[];
  /** Index into the files of each path's NAR file. */
  readonly fileOf: Int32Array;
  readonly createdAt: Float64Array;
  readonly lastAccess: Float64Array;
  /** References of path i: refs[refStart[i] … refStart[i + 1]) (earlier paths). */
  readonly refStart: Int32Array;
  readonly refs: Int32Array;
  readonly files: {
    readonly hash: string[];
    readonly size: Float64Array;
    readonly narSize: Float64Array;
    readonly blobKey: string[];
    readonly createdAt: Float64Array;
  };
  /** Keys of blobs with no record. */
  readonly orphans: string[];
}

/**
 * No time falls within `GAP_MS` after the retention cutoff of `now` (the retention plus the access
 * resolution GC allows for), so that GC, which runs a little after the generation, removes exactly the
 * paths the plan at `now` predicts.
 */
const GAP_MS = 6 * 3_600_000;

function outsideGap(time: number, now: number): number {
  const retentionMs = RETENTION_DAYS * DAY_MS;
  const cutoff = now - retentionMs - accessResolutionMs(retentionMs);
  return time >= cutoff && time < cutoff + GAP_MS ? cutoff + GAP_MS : time;
}

/** mulberry32: a small seeded generator, so every run builds the same cache. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function nix32(rand: () => number, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += NIX32_ALPHABET.charAt(Math.floor(rand() * 32));
  return out;
}

/** A standard normal deviate (Box-Muller). */
function normal(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

export function generate(count: number, seed: number, now = Date.now()): GcData {
  const rand = random(seed);
  const hashParts: string[] = [];
  const names: string[] = [];
  const seen = new Set<string>();
  const fileOf = new Int32Array(count);
  const createdAt = new Float64Array(count);
  const lastAccess = new Float64Array(count);
  const refStart = new Int32Array(count + 1);
  const refList: number[] = [];
  const fileHash: string[] = [];
  const fileSize: number[] = [];
  const narSize: number[] = [];
  const fileCreated: number[] = [];
  const span = SPAN_DAYS * DAY_MS;
  const base = Math.max(1, Math.floor(count * BASE_FRACTION));
  const recentWindow = Math.max(50, Math.floor(count * RECENT_FRACTION));
  const level = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    let hash = nix32(rand, 32);
    while (seen.has(hash)) hash = nix32(rand, 32);
    seen.add(hash);
    hashParts.push(hash);
    names.push(`pkg-${i}`);
    createdAt[i] = outsideGap(Math.floor(now - span + (i / count) * span), now);
    lastAccess[i] =
      rand() < NEVER_DOWNLOADED
        ? (createdAt[i] as number)
        : outsideGap(Math.floor((createdAt[i] as number) + rand() * (now - (createdAt[i] as number))), now);
    if (i > 0 && rand() < SHARED_FILE_PROBABILITY) {
      fileOf[i] = fileOf[Math.floor(rand() * i)] as number;
    } else {
      fileOf[i] = fileHash.length;
      fileHash.push(nix32(rand, 52));
      const size = Math.round(Math.min(2e9, Math.max(500, Math.exp(Math.log(200e3) + 1.5 * normal(rand)))));
      fileSize.push(size);
      narSize.push(Math.round(size * (2 + 2 * rand())));
      fileCreated.push(createdAt[i] as number);
    }
    level[i] = i < base ? 0 : 1 + Math.floor(rand() * (LEVELS - 1));
    const wanted = level[i] === 0 ? 0 : Math.floor(rand() * 9);
    const window = Math.min(i, recentWindow);
    const mine = new Set<number>();
    for (let k = 0; k < wanted; k++) {
      if (rand() < BASE_REF_PROBABILITY) {
        mine.add(Math.floor(rand() * base));
        continue;
      }
      // A recent path of a lower level (a few tries; a build without one just has fewer inputs).
      for (let attempt = 0; attempt < 4; attempt++) {
        const target = i - 1 - Math.floor(rand() * rand() * window);
        if ((level[target] as number) < (level[i] as number)) {
          mine.add(target);
          break;
        }
      }
    }
    refList.push(...mine);
    refStart[i + 1] = refList.length;
  }
  const blobKey = fileHash.map((hash) => `nar/${hash}-${randomBytes(16).toString('hex')}`);
  const orphans: string[] = [];
  for (let i = 0; i < Math.ceil(count * ORPHAN_FRACTION); i++) {
    orphans.push(`nar/${nix32(rand, 52)}-${randomBytes(16).toString('hex')}`);
  }
  return {
    count,
    now,
    hashParts,
    names,
    fileOf,
    createdAt,
    lastAccess,
    refStart,
    refs: Int32Array.from(refList),
    files: {
      hash: fileHash,
      size: Float64Array.from(fileSize),
      narSize: Float64Array.from(narSize),
      blobKey,
      createdAt: Float64Array.from(fileCreated),
    },
    orphans,
  };
}

export function storePath(data: GcData, i: number): string {
  return `/nix/store/${data.hashParts[i]}-${data.names[i]}`;
}

function signature(data: GcData, i: number): string {
  // Not a valid signature (nothing in GC or serving checks it), but one of the right length.
  const hash = data.hashParts[i] as string;
  return JSON.stringify([`bench-gc-1:${Buffer.from(hash + hash).toString('base64')}`]);
}

function refsJson(data: GcData, i: number): string {
  const list: string[] = [];
  for (let e = data.refStart[i] as number; e < (data.refStart[i + 1] as number); e++) {
    const target = data.refs[e] as number;
    list.push(`${data.hashParts[target]}-${data.names[target]}`);
  }
  return JSON.stringify(list);
}

/**
 * What GC will remove with a retention of `RETENTION_DAYS`, computed by GC's own planner on the graph as
 * GC would load it (paths sorted by hash part).
 */
export function expectedPlan(data: GcData): { victims: number; freedBytes: number; storedBytes: number } {
  const order = Array.from({ length: data.count }, (_, i) => i).sort((a, b) =>
    (data.hashParts[a] as string) < (data.hashParts[b] as string) ? -1 : 1,
  );
  const position = new Int32Array(data.count);
  order.forEach((i, p) => (position[i] = p));
  const users = new Int32Array(data.files.hash.length);
  for (let i = 0; i < data.count; i++) {
    const file = data.fileOf[i] as number;
    users[file] = (users[file] as number) + 1;
  }
  const sharedFiles = new Map<number, string>();
  const access = new Float64Array(data.count);
  const fileSize = new Float64Array(data.count);
  const refStart = new Int32Array(data.count + 1);
  const refs = new Int32Array(data.refs.length);
  let storedBytes = 0;
  for (let f = 0; f < users.length; f++)
    if ((users[f] as number) > 0) storedBytes += data.files.size[f] as number;
  let edge = 0;
  for (let p = 0; p < data.count; p++) {
    const i = order[p] as number;
    access[p] = data.lastAccess[i] as number;
    const file = data.fileOf[i] as number;
    fileSize[p] = data.files.size[file] as number;
    if ((users[file] as number) > 1) sharedFiles.set(p, data.files.hash[file] as string);
    for (let e = data.refStart[i] as number; e < (data.refStart[i + 1] as number); e++) {
      refs[edge++] = position[data.refs[e] as number] as number;
    }
    refStart[p + 1] = edge;
  }
  const graph: GcGraph = {
    hashParts: order.map((i) => data.hashParts[i] as string),
    access,
    fileSize,
    sharedFiles,
    refStart,
    refs,
  };
  const plan = planCacheGc(graph, {
    now: data.now,
    retentionMs: RETENTION_DAYS * DAY_MS,
    maxSize: undefined,
    storedBytes,
    pinned: [],
  });
  return { victims: plan.victims.length, freedBytes: plan.freedBytes, storedBytes };
}

/** Paths whose own last access is within retention (GC keeps them whatever references them). */
export function keptPaths(data: GcData): number[] {
  const cutoff = data.now - (RETENTION_DAYS - 1) * DAY_MS;
  const kept: number[] = [];
  for (let i = 0; i < data.count; i++) if ((data.lastAccess[i] as number) > cutoff) kept.push(i);
  return kept;
}

const BATCH = 50_000;

/** Writes the cache's rows into a SQLite database `niche serve` created (cache `cacheId` exists). */
export function loadSqlite(file: string, data: GcData, cacheId: number): void {
  const db = new Database(file);
  try {
    db.pragma('synchronous = OFF');
    db.pragma('cache_size = -262144');
    const insertNar = db.prepare(
      `INSERT INTO nars (file_hash, file_size, compression, nar_hash, nar_size, blob_key, created_at)
       VALUES (?, ?, 'zstd', ?, ?, ?, ?)`,
    );
    const insertPath = db.prepare(
      `INSERT INTO paths (cache_id, hash_part, store_path, file_hash, nar_hash, nar_size, refs, deriver, ca,
                          signatures, created_at, last_access_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?)`,
    );
    const insertRef = db.prepare(
      'INSERT OR IGNORE INTO path_refs (cache_id, ref_hash, hash_part) VALUES (?, ?, ?)',
    );
    const files = data.files;
    for (let start = 0; start < files.hash.length; start += BATCH) {
      db.transaction(() => {
        for (let f = start; f < Math.min(files.hash.length, start + BATCH); f++) {
          insertNar.run(
            files.hash[f],
            files.size[f],
            narHashOf(files.hash[f] as string),
            files.narSize[f],
            files.blobKey[f],
            files.createdAt[f],
          );
        }
      })();
    }
    for (let start = 0; start < data.count; start += BATCH) {
      db.transaction(() => {
        for (let i = start; i < Math.min(data.count, start + BATCH); i++) {
          const file = data.fileOf[i] as number;
          insertPath.run(
            cacheId,
            data.hashParts[i],
            storePath(data, i),
            files.hash[file],
            narHashOf(files.hash[file] as string),
            files.narSize[file],
            refsJson(data, i),
            signature(data, i),
            data.createdAt[i],
            data.lastAccess[i],
          );
          for (let e = data.refStart[i] as number; e < (data.refStart[i + 1] as number); e++) {
            insertRef.run(cacheId, data.hashParts[data.refs[e] as number], data.hashParts[i]);
          }
        }
      })();
    }
    db.prepare('UPDATE caches SET retention_ms = ? WHERE id = ?').run(RETENTION_DAYS * DAY_MS, cacheId);
    // No ANALYZE: niche never runs it, and with its statistics (sqlite_stat4, which better-sqlite3's SQLite
    // is built with) SQLite prepares a statement again whenever a bound value changes, which doubled the
    // cost of every narinfo lookup in bench/scale.ts.
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
}

/**
 * The same rows into PostgreSQL, in multi-row INSERTs from arrays (unnest). The usage triggers are off
 * while loading (session_replication_role = replica, which needs a superuser) and cache_usage is computed
 * afterwards with the migration's own query.
 */
export async function loadPostgres(url: string, data: GcData, cacheId: number): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query("SET session_replication_role = 'replica'");
    const files = data.files;
    for (let start = 0; start < files.hash.length; start += BATCH) {
      const end = Math.min(files.hash.length, start + BATCH);
      const hashes = files.hash.slice(start, end);
      await client.query(
        `INSERT INTO nars (file_hash, file_size, compression, nar_hash, nar_size, blob_key, created_at)
         SELECT h, s, 'zstd', n, ns, b, c
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[])
           AS v(h, s, n, ns, b, c)`,
        [
          hashes,
          Array.from(files.size.subarray(start, end)),
          hashes.map(narHashOf),
          Array.from(files.narSize.subarray(start, end)),
          files.blobKey.slice(start, end),
          Array.from(files.createdAt.subarray(start, end)),
        ],
      );
    }
    for (let start = 0; start < data.count; start += BATCH) {
      const end = Math.min(data.count, start + BATCH);
      const columns = {
        hash: [] as string[],
        path: [] as string[],
        file: [] as string[],
        narHash: [] as string[],
        narSize: [] as number[],
        refs: [] as string[],
        sigs: [] as string[],
        created: [] as number[],
        access: [] as number[],
      };
      const refHash: string[] = [];
      const referrer: string[] = [];
      for (let i = start; i < end; i++) {
        const file = data.fileOf[i] as number;
        columns.hash.push(data.hashParts[i] as string);
        columns.path.push(storePath(data, i));
        columns.file.push(files.hash[file] as string);
        columns.narHash.push(narHashOf(files.hash[file] as string));
        columns.narSize.push(files.narSize[file] as number);
        columns.refs.push(refsJson(data, i));
        columns.sigs.push(signature(data, i));
        columns.created.push(data.createdAt[i] as number);
        columns.access.push(data.lastAccess[i] as number);
        for (let e = data.refStart[i] as number; e < (data.refStart[i + 1] as number); e++) {
          refHash.push(data.hashParts[data.refs[e] as number] as string);
          referrer.push(data.hashParts[i] as string);
        }
      }
      await client.query(
        `INSERT INTO paths (cache_id, hash_part, store_path, file_hash, nar_hash, nar_size, refs, signatures,
                            created_at, last_access_at)
         SELECT $1, h, p, f, n, ns, r::jsonb, s::jsonb, c, a
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[],
                     $9::bigint[], $10::bigint[]) AS v(h, p, f, n, ns, r, s, c, a)`,
        [
          cacheId,
          columns.hash,
          columns.path,
          columns.file,
          columns.narHash,
          columns.narSize,
          columns.refs,
          columns.sigs,
          columns.created,
          columns.access,
        ],
      );
      await client.query(
        `INSERT INTO path_refs (cache_id, ref_hash, hash_part)
         SELECT $1, r, h FROM unnest($2::text[], $3::text[]) AS v(r, h) ON CONFLICT DO NOTHING`,
        [cacheId, refHash, referrer],
      );
    }
    await client.query("SET session_replication_role = 'origin'");
    await client.query(
      `UPDATE cache_usage AS u SET
         paths = (SELECT count(*) FROM paths AS p WHERE p.cache_id = u.cache_id),
         nar_bytes = (SELECT coalesce(sum(p.nar_size), 0) FROM paths AS p WHERE p.cache_id = u.cache_id),
         stored_bytes = (SELECT coalesce(sum(n.file_size), 0) FROM nars AS n
                          WHERE n.file_hash IN (SELECT p.file_hash FROM paths AS p WHERE p.cache_id = u.cache_id)),
         last_push_at = (SELECT max(p.created_at) FROM paths AS p WHERE p.cache_id = u.cache_id)
       WHERE u.cache_id = $1`,
      [cacheId],
    );
    await client.query('UPDATE caches SET retention_ms = $1 WHERE id = $2', [
      RETENTION_DAYS * DAY_MS,
      cacheId,
    ]);
    await client.query('VACUUM ANALYZE');
  } finally {
    await client.end();
  }
}

/** The NAR hash of a file (the bench stores uncompressed-looking pairs; any 52 nix32 characters do). */
function narHashOf(fileHash: string): string {
  return fileHash.split('').reverse().join('');
}

/** An empty file per NAR record and per orphan under `<blobRoot>/nar/` (the bench runs GC with no grace). */
export function writeBlobs(blobRoot: string, data: GcData): void {
  mkdirSync(join(blobRoot, 'nar'), { recursive: true });
  for (const key of [...data.files.blobKey, ...data.orphans]) closeSync(openSync(join(blobRoot, key), 'w'));
}
