// A narinfo may list tens of thousands of references (1 MiB of narinfo holds about 20,000). Checking them
// all in one query held up every other request for about 100 ms with SQLite; the check runs in batches,
// with a turn of the event loop between them.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import { fakeBaseName, fixture, narInfoText } from '../helpers/nar-fixtures.js';

describe('a narinfo with 20,000 references', () => {
  let t: TestServer;
  let push: string;
  before(async () => {
    t = await startTestServer();
    push = await t.token(['main'], ['pull', 'push']);
  });
  after(async () => {
    await t.stop();
  });

  it('is checked in batches, letting other work run between them', async () => {
    const db = t.server.stores.db;
    const original = db.findPresentBaseNames.bind(db);
    const batches: { size: number; turn: number }[] = [];
    let turns = 0;
    let ticking = true;
    const tick = (): void => {
      turns++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    db.findPresentBaseNames = (cacheId, baseNames) => {
      batches.push({ size: baseNames.length, turn: turns });
      return original(cacheId, baseNames);
    };
    try {
      const fx = await fixture('many references', 'zstd');
      const nar = await fetch(`${t.url}/main/nar/${fx.fileName}`, {
        method: 'PUT',
        body: fx.file,
        headers: { authorization: basicAuth(push) },
      });
      assert.equal(nar.status, 201);
      const references = Array.from({ length: 20_000 }, (_, i) => fakeBaseName(`reference-${i}`));
      const base = fakeBaseName('many-references');
      const response = await fetch(`${t.url}/main/${base.slice(0, 32)}.narinfo`, {
        method: 'PUT',
        body: narInfoText(base, fx, { references }),
        headers: { authorization: basicAuth(push) },
      });
      const body = await response.text();
      assert.equal(response.status, 400, body);
      assert.match(body, /REFERENCE_MISSING/);
    } finally {
      ticking = false;
      db.findPresentBaseNames = original;
    }
    assert.ok(batches.length >= 20, `${batches.length} queries`);
    for (const batch of batches) assert.ok(batch.size <= 1000, `a query for ${batch.size} names`);
    for (let i = 1; i < batches.length; i++) {
      assert.ok((batches[i]?.turn ?? 0) > (batches[i - 1]?.turn ?? 0), `no turn before query ${i}`);
    }
  });
});
