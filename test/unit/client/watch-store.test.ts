// watch-store against a stand-in Nix database (a ValidPaths table in a temporary SQLite file): new rows are
// pushed in bounded batches, .drv files only when asked, vanished paths are dropped, a batch whose push
// fails for a retryable reason is retried, and stopping ends the loop.
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { NetworkError } from '../../../src/client/errors.js';
import { ForbiddenError } from '../../../src/errors.js';
import { NixDbReader } from '../../../src/client/nix-db.js';
import type { PushReporter } from '../../../src/client/progress.js';
import type { PushSummary } from '../../../src/client/push.js';
import { watchStore } from '../../../src/client/watch-store.js';
import { makeTempDir, type TempDir } from '../../helpers/tmp.js';

let work: TempDir;
before(async () => {
  work = await makeTempDir('client-watch');
});
after(async () => {
  await work.cleanup();
});

const quiet: PushReporter = {
  planned: () => undefined,
  progress: () => undefined,
  pushed: () => undefined,
  retrying: () => undefined,
  failed: () => undefined,
  skipped: () => undefined,
  note: () => undefined,
  done: () => undefined,
};

function summary(pushed: number): PushSummary {
  return {
    closure: pushed,
    pushed,
    alreadyPresent: 0,
    skippedUpstream: 0,
    failed: [],
    skippedDependency: 0,
    cancelled: 0,
    narBytes: 0,
    compressedBytes: 0,
    elapsedMs: 1,
  };
}

function fakeNixDb(name: string): { file: string; add: (path: string) => Promise<void> } {
  const file = join(work.path, `${name}.sqlite`);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.exec(
    'CREATE TABLE ValidPaths (id integer primary key autoincrement not null, path text unique not null)',
  );
  const insert = db.prepare<[string]>('INSERT INTO ValidPaths (path) VALUES (?)');
  return {
    file,
    add: async (path) => {
      await mkdir(join(path, '..'), { recursive: true });
      await writeFile(path, 'x');
      insert.run(path);
    },
  };
}

describe('watchStore', () => {
  it('pushes new paths in bounded batches, skipping .drv files and paths that are gone again', async () => {
    const nixDb = fakeNixDb('batches');
    const store = join(work.path, 'store-batches');
    await nixDb.add(join(store, 'before-start'));
    const reader = NixDbReader.open(nixDb.file);
    const stop = new AbortController();
    const pushes: string[][] = [];
    const watching = watchStore({
      db: reader,
      intervalMs: 10,
      includeDrv: false,
      batchSize: 3,
      stopSignal: stop.signal,
      reporter: quiet,
      push: (paths) => {
        pushes.push([...paths]);
        if (pushes.flat().length >= 5) stop.abort();
        return Promise.resolve(summary(paths.length));
      },
    });
    for (const name of ['a', 'b', 'c.drv', 'd']) await nixDb.add(join(store, name));
    // Registered but already deleted: not pushed.
    const db = new Database(nixDb.file);
    db.prepare('INSERT INTO ValidPaths (path) VALUES (?)').run(join(store, 'gone'));
    db.close();
    for (const name of ['e', 'f']) await nixDb.add(join(store, name));
    const totals = await watching;
    reader.close();
    assert.ok(pushes.every((batch) => batch.length <= 3));
    assert.deepEqual(
      pushes.flat().map((path) => path.slice(store.length + 1)),
      ['a', 'b', 'd', 'e', 'f'],
    );
    assert.equal(totals.pushed, 5);
  });

  it('includes .drv files when asked, retries a batch after a retryable failure, and stops', async () => {
    const nixDb = fakeNixDb('retry');
    const store = join(work.path, 'store-retry');
    const reader = NixDbReader.open(nixDb.file);
    const stop = new AbortController();
    const attempts: string[][] = [];
    const watching = watchStore({
      db: reader,
      intervalMs: 5,
      includeDrv: true,
      batchSize: 100,
      stopSignal: stop.signal,
      reporter: quiet,
      startAfterId: 0,
      push: (paths) => {
        attempts.push([...paths]);
        if (attempts.length === 1) return Promise.reject(new NetworkError('server down'));
        stop.abort();
        return Promise.resolve(summary(paths.length));
      },
    });
    await nixDb.add(join(store, 'x.drv'));
    const totals = await watching;
    reader.close();
    assert.equal(attempts.length, 2);
    assert.deepEqual(attempts[0], attempts[1]);
    assert.equal(totals.pushed, 1);
  });

  it('stops with the error when the server refuses the token or its push permission', async () => {
    const nixDb = fakeNixDb('refused');
    const store = join(work.path, 'store-refused');
    const reader = NixDbReader.open(nixDb.file);
    const stop = new AbortController();
    let pushes = 0;
    const refusal = new ForbiddenError('this token lacks the push permission on cache main (HTTP 403)');
    const watching = watchStore({
      db: reader,
      intervalMs: 5,
      includeDrv: false,
      batchSize: 100,
      stopSignal: stop.signal,
      reporter: quiet,
      startAfterId: 0,
      push: () => {
        pushes++;
        return Promise.resolve({
          ...summary(0),
          failed: [{ path: 'x', error: refusal }],
          stoppedBy: refusal,
        });
      },
    });
    // Handled at once: the watch may end before the second path is even added.
    const ended = watching.then(
      () => 'resolved',
      (error: unknown) => error,
    );
    for (const name of ['a', 'b']) await nixDb.add(join(store, name));
    try {
      assert.equal(await ended, refusal);
    } finally {
      stop.abort();
      reader.close();
    }
    assert.equal(pushes, 1, 'neither retried as a batch nor path by path');
  });

  it('refuses a file that is not a Nix database', async () => {
    const file = join(work.path, 'not-a-db');
    await writeFile(file, 'hello');
    assert.throws(() => NixDbReader.open(file), { code: 'CONFIG_INVALID' });
    assert.throws(() => NixDbReader.open(join(work.path, 'missing.sqlite')), /cannot open the Nix database/);
  });
});
