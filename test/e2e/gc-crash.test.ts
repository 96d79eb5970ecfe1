// Crash safety of garbage collection: `niche gc`, and a `niche serve` collecting on its schedule, killed
// with SIGKILL at several points; after each kill the invariant holds (every path served has its
// references and its NAR), and a second collection finishes the work: exactly the expected paths are gone
// and their NAR files with them.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';

import { openStores } from '../../src/app/data-dir.js';
import { CacheService } from '../../src/cache/cache-service.js';
import { GC_LEASE } from '../../src/cache/gc.js';
import { loadServeConfig } from '../../src/config.js';
import { REPO_ROOT, runCli, startServe } from '../helpers/cli-process.js';
import {
  assertInvariant,
  buildWorld,
  expectedKept,
  newCache,
  random,
  upload,
  type WorldPath,
} from '../helpers/gc-world.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

const silent = pino({ level: 'silent' });
const DAY = 86_400_000;
const COUNT = 500;
const CLI = join(REPO_ROOT, 'src/cli/main.ts');

interface World {
  readonly dir: TempDir;
  readonly paths: WorldPath[];
  readonly kept: Set<number>;
}

/** A data directory with COUNT paths, of which the ones not needed by the recently used go at the next GC. */
async function makeWorld(seed: number): Promise<World> {
  const dir = await makeTempDir(`gc-crash-${seed}`);
  const stores = await openStores(loadServeConfig({ data: dir.path }, {}));
  const service = new CacheService({
    db: stores.db,
    blobs: stores.blobs,
    logger: silent,
    accessFlushMs: 0,
    trackAccesses: false,
  });
  const paths = await buildWorld(seed, COUNT, `crash${seed}`);
  const cache = await newCache(service, 'main');
  for (const path of paths) await upload(service, cache, path, paths);
  await service.db.updateCache(cache.id, { retentionMs: 5 * DAY });
  await service.close();
  await stores.db.close();
  await stores.blobs.close();
  // Pushed ten days ago; a fifth of the paths used since (written directly: time cannot be made to pass).
  const next = random(seed);
  const recent = new Set(paths.filter(() => next() < 0.05).map((path) => path.index));
  const db = new Database(join(dir.path, 'niche.sqlite'));
  const old = Date.now() - 10 * DAY;
  const set = db.prepare('UPDATE paths SET last_access_at = ?, created_at = ? WHERE hash_part = ?');
  db.transaction(() => {
    for (const path of paths) set.run(recent.has(path.index) ? Date.now() : old, old, path.hashPart);
  })();
  db.close();
  return { dir, paths, kept: expectedKept(paths, recent) };
}

function rows(world: World, table: 'paths' | 'nars'): number {
  const db = new Database(join(world.dir.path, 'niche.sqlite'), { readonly: true });
  try {
    return Number(db.prepare(`SELECT count(*) FROM ${table}`).pluck().get());
  } finally {
    db.close();
  }
}

/** Polls until `reached` (true) or the process exits (false). */
async function until(reached: () => boolean, exited: () => boolean): Promise<boolean> {
  for (let waited = 0; waited < 60_000 && !exited(); waited += 5) {
    if (reached()) return true;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return false;
}

/** The process id in the GC lease's holder (`<host> <pid> <id>`), if the lease is held. */
function leaseHolderPid(world: World): number | undefined {
  const db = new Database(join(world.dir.path, 'niche.sqlite'), { readonly: true });
  try {
    const holder = db.prepare('SELECT holder FROM leases WHERE name = ?').pluck().get(GC_LEASE);
    return typeof holder === 'string' ? Number(holder.split(' ')[1]) : undefined;
  } finally {
    db.close();
  }
}

/** Whether process `pid` exits within 10 s (a zombie has: its parent was killed, nobody reaped it yet). */
async function gone(pid: number): Promise<boolean> {
  for (let waited = 0; waited < 10_000; waited += 20) {
    let state: string;
    try {
      // "<pid> (<comm>) <state> …"
      state = readFileSync(`/proc/${pid}/stat`, 'utf8')
        .replace(/^.*\) /s, '')
        .slice(0, 1);
    } catch {
      return true;
    }
    if (state === 'Z') return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return false;
}

async function check(world: World): Promise<Set<string>> {
  const stores = await openStores(loadServeConfig({ data: world.dir.path }, {}));
  const service = new CacheService({
    db: stores.db,
    blobs: stores.blobs,
    logger: silent,
    accessFlushMs: 0,
    trackAccesses: false,
  });
  try {
    const cache = await service.db.getCache('main');
    assert.ok(cache !== undefined);
    return await assertInvariant(service, cache);
  } finally {
    await service.close();
    await stores.db.close();
    await stores.blobs.close();
  }
}

async function assertFinished(world: World): Promise<void> {
  const served = await check(world);
  const expected = world.paths.filter((path) => world.kept.has(path.index)).map((path) => path.hashPart);
  assert.deepEqual([...served].sort(), expected.sort());
  const db = new Database(join(world.dir.path, 'niche.sqlite'), { readonly: true });
  try {
    const nars = db.prepare('SELECT count(*) FROM nars').pluck().get();
    const files = new Set(
      world.paths.filter((path) => world.kept.has(path.index)).map((path) => path.fx.fileHash),
    );
    assert.equal(nars, files.size, 'the NAR records of removed paths are gone');
  } finally {
    db.close();
  }
}

void describe('GC killed with SIGKILL', () => {
  let worlds: World[] = [];
  before(() => {
    worlds = [];
  });
  after(async () => {
    for (const world of worlds) await world.dir.cleanup();
  });

  void it('niche gc: killed at several points, the invariant holds; a second run finishes the work', async () => {
    const world = await makeWorld(1);
    worlds.push(world);
    const count = (table: 'paths' | 'nars'): number => rows(world, table);
    const nars = count('nars');
    // Killed as soon as the database shows it got that far: after a first batch of paths, halfway through
    // them, once NAR records started going (their blobs next), and once at a random moment.
    const moments: { what: string; reached: () => boolean }[] = [
      { what: 'after a first batch of paths', reached: () => count('paths') < COUNT },
      { what: 'halfway through the paths', reached: () => count('paths') < (COUNT + world.kept.size) / 2 },
      { what: 'while NAR files go', reached: () => count('nars') < nars },
    ];
    for (const moment of moments) {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', CLI, 'gc', '--data', world.dir.path, '--grace', '0'],
        {
          cwd: REPO_ROOT,
          stdio: 'ignore',
        },
      );
      const exited = once(child, 'exit');
      const reached = await until(moment.reached, () => child.exitCode !== null);
      child.kill('SIGKILL');
      await exited;
      assert.ok(reached, `the collection ended before it was killed ${moment.what}`);
      await check(world);
    }
    const last = await runCli(['gc', '--data', world.dir.path, '--grace', '0'], { timeoutMs: 120_000 });
    assert.equal(last.code, 0, last.stderr);
    await assertFinished(world);
  });

  void it('niche serve collecting on its schedule: killed mid-collection, restarted, finishes', async () => {
    const world = await makeWorld(2);
    worlds.push(world);
    const env = { NICHE_GC_INTERVAL: '1s', NICHE_GC_GRACE: '1ms' };
    const nars = rows(world, 'nars');
    for (const reached of [() => rows(world, 'paths') < COUNT, () => rows(world, 'nars') < nars]) {
      const server = await startServe({ dataDir: world.dir.path, env });
      const got = await until(reached, () => server.child.exitCode !== null);
      const collector = leaseHolderPid(world);
      await server.stop();
      assert.ok(got, 'the server finished collecting before it was killed');
      // The collection ran in a child process, which does not outlive the server.
      assert.ok(
        collector !== undefined && collector !== server.child.pid,
        `lease holder ${String(collector)}`,
      );
      assert.ok(await gone(collector), `the collecting process ${collector} outlived the server`);
      await check(world);
    }
    const server = await startServe({ dataDir: world.dir.path, env });
    try {
      // Done when the next collection finds nothing left to do.
      const deadline = Date.now() + 60_000;
      for (;;) {
        await new Promise((resolve) => setTimeout(resolve, 1500));
        const db = new Database(join(world.dir.path, 'niche.sqlite'), { readonly: true });
        const left = db.prepare('SELECT count(*) FROM paths').pluck().get();
        const nars = db.prepare('SELECT count(*) FROM nars').pluck().get();
        db.close();
        const files = new Set(
          world.paths.filter((path) => world.kept.has(path.index)).map((path) => path.fx.fileHash),
        );
        if (left === world.kept.size && nars === files.size) break;
        assert.ok(Date.now() < deadline, `still ${String(left)} paths and ${String(nars)} NAR records`);
      }
    } finally {
      await server.stop();
    }
    await assertFinished(world);
  });
});
