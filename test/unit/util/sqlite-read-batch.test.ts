// The per-turn read batch of the SQLite stores (src/util/sqlite-read-batch.ts): reads asked for in one turn
// of the event loop share one read transaction, a lone read runs without one, each read sees what was
// committed before it was asked (by this connection or another), one read's failure is its own, and a
// closed connection rejects instead of throwing.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';

import { ReadBatch } from '../../../src/util/sqlite-read-batch.js';
import { makeTempDir, type TempDir } from '../../helpers/tmp.js';

class Wrapped extends Error {}

void describe('ReadBatch', () => {
  let dir: TempDir;
  let db: Database.Database;
  let other: Database.Database;
  let batch: ReadBatch;
  let value: Database.Statement<[number], number | undefined>;

  beforeEach(async () => {
    dir = await makeTempDir('read-batch');
    const file = join(dir.path, 'db.sqlite');
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)');
    other = new Database(file);
    batch = new ReadBatch(db, (error) => new Wrapped(String(error)));
    value = db.prepare<[number], number | undefined>('SELECT v FROM t WHERE k = ?').pluck();
  });
  afterEach(async () => {
    if (db.open) db.close();
    other.close();
    await dir.cleanup();
  });

  void it('runs the reads of one turn in one transaction, a lone read in none', async () => {
    db.prepare('INSERT INTO t VALUES (1, 10), (2, 20), (3, 30)').run();
    const seen: boolean[] = [];
    const read = (k: number): Promise<number | undefined> =>
      batch.read(() => {
        seen.push(db.inTransaction);
        return value.get(k);
      });
    assert.deepEqual(await Promise.all([read(1), read(2), read(3), read(4)]), [10, 20, 30, undefined]);
    assert.deepEqual(seen, [true, true, true, true]);
    assert.equal(db.inTransaction, false, 'the batch committed');
    seen.length = 0;
    assert.equal(await read(2), 20);
    assert.deepEqual(seen, [false]);
  });

  void it('sees what was committed before the read was asked, here or on another connection', async () => {
    const first = batch.read(() => value.get(1));
    other.prepare('INSERT INTO t VALUES (1, 11)').run();
    db.prepare('INSERT INTO t VALUES (2, 22)').run();
    const second = batch.read(() => value.get(2));
    assert.deepEqual(await Promise.all([first, second]), [11, 22]);
    // The next turn's batch takes a new snapshot.
    other.prepare('UPDATE t SET v = 12 WHERE k = 1').run();
    assert.deepEqual(
      await Promise.all([batch.read(() => value.get(1)), batch.read(() => value.get(2))]),
      [12, 22],
    );
  });

  void it("rejects only the read that failed, with the mapped error, and commits the others' transaction", async () => {
    db.prepare('INSERT INTO t VALUES (1, 10)').run();
    const results = await Promise.allSettled([
      batch.read(() => value.get(1)),
      batch.read(() => db.prepare('SELECT nosuch FROM t').get()),
      batch.read(() => value.get(1)),
    ]);
    assert.deepEqual(
      results.map((result) => result.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    const [, failed] = results;
    assert.ok(failed.status === 'rejected' && failed.reason instanceof Wrapped);
    assert.equal(db.inTransaction, false);
    // A write after the batch is not caught in a transaction left open.
    db.prepare('INSERT INTO t VALUES (2, 20)').run();
    assert.equal(other.prepare('SELECT v FROM t WHERE k = 2').pluck().get(), 20);
  });

  void it('rejects every read of a turn in which the connection was closed', async () => {
    const reads = [batch.read(() => value.get(1)), batch.read(() => value.get(2))];
    db.close();
    for (const read of reads) await assert.rejects(read, Wrapped);
  });
});
