// A backend failure answers 500 with its code and a request id, never with its details: a full disk's
// message names files under the data directory (issue 10, item 5). The details go to the log, under the
// same id, so an operator can find them from what a user reports.
import assert from 'node:assert/strict';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { UPLOAD_CONTENT_TYPE, type PathUpload } from '../../src/api/v1.js';
import { FS_BLOB_TMP_DIR } from '../../src/storage/fs/fs-blob-store.js';
import { waitFor } from '../helpers/wait.js';
import { LogSink } from '../helpers/log-sink.js';
import { fakeBaseName, fixture } from '../helpers/nar-fixtures.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';

describe('a failing backend', () => {
  const logs = new LogSink();
  let t: TestServer;
  let push: string;
  before(async () => {
    t = await startTestServer({ start: { logger: pino({ level: 'info' }, logs) } });
    push = await t.token(['main'], ['pull', 'push']);
    // The store's temp directory becomes a file: creating a temp file fails with ENOTDIR, a message that
    // names the path, as ENOSPC does.
    const tmpRoot = join(t.dataDir, 'blobs', FS_BLOB_TMP_DIR);
    for (const dir of await readdir(tmpRoot)) {
      await rm(join(tmpRoot, dir), { recursive: true });
      await writeFile(join(tmpRoot, dir), 'not a directory');
    }
  });
  after(async () => {
    await t.stop();
  });

  for (const [what, api] of [
    ['the binary cache protocol', false],
    ['the JSON API', true],
  ] as const) {
    it(`answers 500 with a request id and no server detail (${what})`, async () => {
      const fx = await fixture(`contents for ${what}`, 'zstd');
      const base = fakeBaseName(what.replaceAll(' ', '-'));
      const meta: PathUpload = {
        storePath: `/nix/store/${base}`,
        narHash: `sha256:${fx.narHash}`,
        narSize: fx.nar.length,
        references: [],
        signatures: [],
        compression: 'zstd',
      };
      const response = api
        ? await fetch(`${t.url}/api/v1/caches/main/paths/${base.slice(0, 32)}`, {
            method: 'PUT',
            body: Buffer.concat([Buffer.from(`${JSON.stringify(meta)}\n`), fx.file]),
            headers: { authorization: `Bearer ${push}`, 'content-type': UPLOAD_CONTENT_TYPE },
          })
        : await fetch(`${t.url}/main/nar/${fx.fileName}`, {
            method: 'PUT',
            body: fx.file,
            headers: { authorization: basicAuth(push) },
          });
      const body = await response.text();
      assert.equal(response.status, 500, body);
      const requestId = response.headers.get('x-request-id');
      // The request's own id (src/http/access-log.ts), shared by its access line and its error line.
      assert.match(requestId ?? '', /^[0-9a-f]{12}-[0-9a-z]+$/);
      assert.ok(body.includes('STORAGE_FAILURE'), body);
      assert.ok(body.includes(requestId ?? '?'), body);
      for (const secret of [t.dataDir, 'ENOTDIR', FS_BLOB_TMP_DIR, 'temp file']) {
        assert.ok(!body.includes(secret), `the answer reveals ${secret}: ${body}`);
      }
      const logged = await waitFor(
        () => {
          const lines = logs.matching(new RegExp(requestId ?? '?'));
          return lines.length === 2 ? lines : undefined;
        },
        { what: 'the error line and the access line' },
      ).catch(() => logs.matching(new RegExp(requestId ?? '?')));
      assert.equal(logged.length, 2, logs.lines.join('\n'));
      assert.match(logged.find((line) => line.includes('"level":50')) ?? '', /ENOTDIR/);
      assert.match(logged.find((line) => line.includes('"msg":"request"')) ?? '', /"status":500/);
    });
  }
});
